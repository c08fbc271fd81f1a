"""Expected failures, each carrying the exit code the CLI should end with.

Raise these for anything a user can cause (a bad path, a bad option, a corrupt file). The CLI
prints the message as one line and exits with `exit_code`; anything else is a bug and keeps
its traceback.
"""


class BertcliError(Exception):
    """A failure the user can fix; the message names what is wrong and how to fix it."""

    exit_code = 1


class UsageError(BertcliError):
    """Bad arguments, options or config: exit 2."""

    exit_code = 2


class DataError(BertcliError):
    """Input that cannot be used as it is (corrupt, empty, mismatched): exit 1 at run time."""

    exit_code = 1
