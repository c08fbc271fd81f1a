"""`bertcli make-data`, by job: options.py (the options and their rules), reading.py (documents into
windows), windows.py (one window's instances, in a worker), pool.py (the worker processes),
writer.py (shards and the resume cursor), output.py (the --out directory, --overwrite,
--resume), diagnostics.py (what is refused or warned about), progress.py (the progress bar),
run.py (the command end to end).

The names below are the package's public surface; they load on first use, so that importing
the options (as the command line does) costs no numpy.
"""

from __future__ import annotations

import importlib

from bertcli.make_data.options import SHORT_SEQ_PROB, MakeDataOptions

_HOMES = {
    "make_data": "run", "read_windows": "reading", "build_window": "windows", "masking_params": "windows",
    "window_seed": "windows", "WindowResult": "windows", "SplitState": "writer", "SplitWriter": "writer",
    "PROGRESS": "writer",
}

__all__ = ["SHORT_SEQ_PROB", "MakeDataOptions", *_HOMES]


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
