"""One rich console on stderr, so stdout stays clean for machine-readable output.

Errors and warnings carry user-supplied text (paths, field names, record keys, option values):
they are printed as plain text, never as markup or emoji codes, so `a:smile:b.txt`, `intcol:train:`
and `[unused]` print as written, and on one line of bounded length (`MAX_LINE_CHARS`). A value
echoed inside a message is bounded where it is quoted (`shown`).
"""

from rich.console import Console
from rich.text import Text

console = Console(stderr=True, highlight=False, emoji=False)

MAX_VALUE_CHARS = 200  # one echoed value (a path, a key, a record's content)
MAX_LINE_CHARS = 2000  # one whole error or warning line


def shown(value, limit: int = MAX_VALUE_CHARS) -> str:
    """`value` as text of at most `limit` characters, an ellipsis marking a cut."""
    text = str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def one_line(message: str, limit: int = MAX_LINE_CHARS) -> str:
    """A message on one line, cut in the middle (its start names the file, its end the fix)."""
    text = " ".join(str(message).splitlines())
    if len(text) <= limit:
        return text
    keep = (limit - 5) // 2
    return f"{text[:keep]} […] {text[-keep:]}"


def _print(label: str, style: str, message: str) -> None:
    console.print(Text.assemble((label, style), " ", one_line(message)), soft_wrap=True)


def warn(message: str) -> None:
    _print("warning:", "yellow", message)


def error_line(message: str) -> None:
    _print("error:", "bold red", message)
