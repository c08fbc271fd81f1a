"""The worker pool: windows built in spawned processes, at most two per worker in flight, collected in order."""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from contextlib import contextmanager
from pathlib import Path

from bertcli.make_data.reading import read_windows
from bertcli.make_data.windows import build_in_worker, init_worker


def paying_workers(workers: int, input_bytes: int | None, window_chars: int) -> int:
    """At most one worker per window of the input: a spawned worker costs an import of bertcli
    (~0.3 CPU-seconds) and idles without a window to build, so an input of one window is built in
    this process. input_bytes None (a dataset, its size unknown up front): the workers asked for."""
    if workers <= 1 or input_bytes is None:
        return workers
    return max(1, min(workers, -(-input_bytes // window_chars)))


@contextmanager
def worker_pool(workers: int, tokenizer_dir: Path):
    """A pool of `workers` processes (None for one worker: build in this process).

    Spawned, not forked: a fork copies this process's threads' locks in whatever state they
    are (SentencePiece, OpenMP, rich), which can deadlock, and fork is unsafe on macOS. Spawning
    costs each worker an import of bertcli (a fraction of a second), once per run.
    """
    if workers == 1:
        yield None
        return
    pool = mp.get_context("spawn").Pool(workers, initializer=init_worker, initargs=(str(tokenizer_dir),))
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


def run_pool(pool, corpus, opts, workers, writers, progress) -> None:
    """Build windows in the pool, at most 2 per worker in flight, collected in order."""
    inflight: deque = deque()
    for split, index, docs in read_windows(corpus, opts):
        progress.read(len(docs))
        if not writers[split].wants(index):
            continue
        inflight.append(pool.apply_async(build_in_worker, ((split, index, docs, opts),)))
        while len(inflight) >= 2 * workers:
            _collect(inflight.popleft(), writers, progress)
    while inflight:
        _collect(inflight.popleft(), writers, progress)


def _collect(async_result, writers, progress) -> None:
    result = async_result.get()
    writers[result.split].add(result)
    progress.built(len(result.examples))
