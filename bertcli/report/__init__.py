"""`bertcli report`: run directories in, one self-contained HTML file out (charts in inline SVG).

runs.py reads what a run left on disk, page.py lays out the page, svg.py draws the charts. The
file references nothing outside itself (no script, font, stylesheet or image), so it opens from
disk, offline, and can be mailed or copied with the run. It carries a generator marker, and bertcli
only ever replaces a file that has it: a file of the user's with that name is left alone. pretrain
also records its report.html in the run directory's ownership marker (fsutil), so that
`pretrain --overwrite` may replace it.

This package never imports the trainer; pretrain calls `write_report` on its own run directory.
"""

from __future__ import annotations

from pathlib import Path

from bertcli.errors import UsageError
from bertcli.fsutil import own, write_bytes_atomic
from bertcli.report.page import GENERATOR, render
from bertcli.report.runs import read_run, run_names

REPORT_FILE = "report.html"
MARKER = f'<meta name="generator" content="{GENERATOR}">'.encode()


def is_bertcli_report(path: Path) -> bool:
    """Whether `path` is a report bertcli wrote (its head carries the generator marker)."""
    try:
        with open(path, "rb") as f:
            return MARKER in f.read(4096)
    except OSError:
        return False


def default_out(runs: list[Path]) -> Path:
    if len(runs) != 1:
        raise UsageError(f"{len(runs)} runs in one report: say where it goes with --out FILE.html")
    return Path(runs[0]) / REPORT_FILE


def write_report(runs: list[Path], out: Path) -> Path:
    """Read the runs, render the page, and write it to `out` (never over a file bertcli did not write)."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file name such as {out / REPORT_FILE}")
    if (out.exists() or out.is_symlink()) and not is_bertcli_report(out):
        raise UsageError(f"--out {out} exists and is not a report bertcli wrote; it is left as it is: "
                         "choose another --out or move the file")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: the directory {out.parent} does not exist; create it first")
    names = run_names(runs)
    html = render([read_run(Path(p), name) for p, name in zip(runs, names)])
    write_bytes_atomic(out, html.encode("utf-8"))
    return out


def write_run_report(run_dir: Path) -> Path | None:
    """pretrain's report.html in its run directory, recorded in the directory's ownership marker (so that
    --overwrite may replace it); None, with a warning, when it cannot be written or when a report.html
    there is not one bertcli wrote — a report never stops a run."""
    from bertcli.console import warn
    from bertcli.errors import BertcliError

    path = Path(run_dir) / REPORT_FILE
    if (path.exists() or path.is_symlink()) and not is_bertcli_report(path):
        warn(f"{path} is not a report bertcli wrote: it is left alone and no report is written; "
             f"move it away, or make one elsewhere with bertcli report {run_dir} --out FILE.html")
        return None
    try:
        write_report([Path(run_dir)], path)
        own(run_dir, [REPORT_FILE], rewritten=True)  # rewritten at every checkpoint (and by bertcli report)
        return path
    except (BertcliError, OSError) as e:
        warn(f"no report written to {path}: {e}")
        return None
