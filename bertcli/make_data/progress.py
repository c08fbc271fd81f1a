"""make-data's progress bar (bytes read, documents/s, instances/s) and its CPU-time measure."""

from __future__ import annotations

import time

from bertcli.console import console
from bertcli.corpus import Corpus


def cpu_time() -> float:
    """CPU time of this process and of its finished children (the pool's workers, once joined)."""
    try:
        import resource
    except ImportError:  # not on Windows: this process only
        return time.process_time()
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Progress:
    """A rich progress bar over bytes read, with documents/s and instances/s."""

    def __init__(self, corpus: Corpus, enabled: bool):
        self.corpus, self.enabled = corpus, enabled
        self.documents = self.instances = 0
        self.start = time.perf_counter()

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
            self.bar = Progress(TextColumn("make-data"), BarColumn(),
                                TextColumn("{task.fields[mb]}"), TextColumn("{task.fields[rates]}"),
                                TimeRemainingColumn(), console=console, transient=False)
            self.bar.__enter__()
            self.task = self.bar.add_task("", total=max(self.corpus.stats.total_bytes, 1), mb="", rates="")
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._refresh()
            self.bar.__exit__(*exc)

    def read(self, documents: int) -> None:
        self.documents += documents
        self._refresh()

    def built(self, instances: int) -> None:
        self.instances += instances
        self._refresh()

    def _refresh(self) -> None:
        if not self.enabled:
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        done = self.corpus.stats.bytes_done
        self.bar.update(self.task, completed=done,
                        mb=f"{done / 1e6:.1f}/{self.corpus.stats.total_bytes / 1e6:.1f} MB",
                        rates=f"{self.documents / elapsed:,.0f} docs/s {self.instances / elapsed:,.0f} inst/s")
