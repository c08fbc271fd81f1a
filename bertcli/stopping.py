"""Stopping pretrain on request: Ctrl-C, SIGTERM and SIGHUP (preemption: SLURM, Kubernetes, docker stop).

The first signal asks the trainer to stop at the next step boundary: it finishes the step,
writes a checkpoint and exits with the conventional 128 + signal number (130 for Ctrl-C, 143
for SIGTERM, 129 for SIGHUP), so `--resume auto` continues exactly. A second signal aborts at
once, without a checkpoint, with the same exit code.
"""

from __future__ import annotations

import signal

from bertcli.errors import BertcliError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BertcliError):
    """Stopped on a signal after writing a checkpoint; exits 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class Aborted(BertcliError):
    """A second stop signal: leave now, without a checkpoint (the CLI exits 128 + the signal number)."""

    def __init__(self, signum: int):
        super().__init__(f"aborted by a second {signal.Signals(signum).name}; no checkpoint was written for the "
                         "current step — --resume auto continues from the last one")
        self.exit_code = 128 + signum


class StopRequest:
    """Turns the first stop signal into a flag the training loop reads between steps."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        for signum in STOP_SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise Aborted(signum)
        self.signum = signum

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
