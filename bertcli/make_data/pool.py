"""The worker pool: windows built in spawned processes, at most two per worker in flight, collected in order.

It is built to survive the signals that a scheduler sends to a whole process group (SLURM,
`kill -TERM -- -PGID`, docker stop, Ctrl-C in a terminal):
- Each worker is born with SIGINT, SIGTERM and SIGHUP blocked: the parent blocks them around
  the spawn, and a spawned child inherits the mask. The worker then ignores them too. So a
  worker never dies of one, whether the signal came early or late. Only the parent decides to
  stop, and it kills its workers.
- Each worker has its own pipes. A worker killed by anything else (the OOM killer, kill -9)
  therefore leaves no shared lock held, and the parent sees it die (its sentinel) instead of
  waiting forever for the result.
That is why this is not a multiprocessing.Pool. An idle Pool worker holds the lock of the
shared task queue while it waits. A worker that dies holding that lock hangs the pool, and also
the parent's `terminate()`, for good.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import queue
import signal
import threading
from collections import deque
from contextlib import contextmanager
from multiprocessing import resource_tracker
from multiprocessing.connection import wait
from pathlib import Path

from bertcli.errors import DataError
from bertcli.make_data.reading import read_windows
from bertcli.make_data.windows import build_in_worker, init_worker

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class WorkerDied(DataError):
    """A worker was killed from outside (exit 1); the finished shards stay for --resume."""


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
    pool = Pool(workers, tokenizer_dir)
    try:
        yield pool
    except BaseException:
        pool.kill()
        raise
    else:
        pool.close()


@contextmanager
def _signals_held():
    """Start workers with the stop signals blocked (each child inherits the mask) and with this
    process's handlers held back: a signal that another thread takes would otherwise run its handler
    in the middle of a worker's start, leaving a half-started child. Held signals arrive at the end."""
    held: list[int] = []
    previous = {}
    try:
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, lambda signum, frame: held.append(signum))
    except ValueError:  # not the main thread: no handler of ours can run here anyway
        pass
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)  # now the real handler runs (raises, as on any stop)


class Pool:
    """`workers` spawned processes, each with a task pipe and a result pipe of its own."""

    def __init__(self, workers: int, tokenizer_dir: Path):
        ctx = mp.get_context("spawn")
        self.processes, self.tasks, self.results = [], [], []
        self.next = 0  # the worker the next task goes to (round robin; results come back in order)
        atexit.register(self.kill)  # whatever happens, never leave a worker behind (they ignore SIGTERM)
        # multiprocessing starts its resource tracker on the first spawn, and then unblocks SIGINT and
        # SIGTERM itself: start it now, before they are blocked
        resource_tracker.ensure_running()
        try:
            with _signals_held():
                for _ in range(workers):
                    task_out, task_in = ctx.Pipe(duplex=False)
                    result_out, result_in = ctx.Pipe(duplex=False)
                    process = ctx.Process(target=_work, args=(str(tokenizer_dir), task_out, result_in), daemon=True)
                    self.processes.append(process)
                    process.start()
                    task_out.close()
                    result_in.close()
                    self.tasks.append(task_in)
                    self.results.append(result_out)
        except BaseException:  # including a held signal's KeyboardInterrupt or Terminated
            self.kill()
            raise

    def submit(self, task) -> int:
        """Send a task to the next worker; the worker's number, to collect its result with."""
        worker, self.next = self.next, (self.next + 1) % len(self.processes)
        try:
            self.tasks[worker].send(task)
        except OSError:  # its end of the pipe is gone: the worker is dead
            raise self._died(worker) from None
        return worker

    def result(self, worker: int):
        """The oldest result not yet collected from `worker`; WorkerDied if it was killed first."""
        conn, process = self.results[worker], self.processes[worker]
        while True:
            ready = wait([conn, process.sentinel])
            if conn in ready or conn.poll():
                try:
                    status, value = conn.recv()
                except (EOFError, OSError):  # closed, or killed part-way through a message ("got end of file")
                    break
                if status == "error":
                    raise value
                return value
            if process.sentinel in ready:
                break
        raise self._died(worker)

    def _died(self, worker: int) -> WorkerDied:
        process = self.processes[worker]
        process.join()
        code = process.exitcode
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        return WorkerDied(f"a make-data worker (pid {process.pid}) died ({how}), perhaps out of memory; the finished "
                          "shards are kept — rerun the same command with --resume (and fewer --workers)")

    def close(self) -> None:
        """No more tasks: each worker ends once it has sent its last result."""
        for conn in self.tasks:
            conn.close()
        for process in self.processes:
            process.join()
        atexit.unregister(self.kill)

    def kill(self) -> None:
        """Stop now. SIGKILL, since the workers ignore the polite signals; nothing is shared to leave locked."""
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                process.kill()
        for process in self.processes:
            if process.pid is not None:
                process.join()
        atexit.unregister(self.kill)


def _work(tokenizer_dir: str, tasks, results) -> None:
    """A worker: build each window it is sent, in order, until its task pipe closes."""
    for signum in STOP_SIGNALS:  # blocked since birth; now ignored as well (a pending one is discarded)
        signal.signal(signum, signal.SIG_IGN)
    init_worker(tokenizer_dir)
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def receive() -> None:  # drain the task pipe at once, so that the parent never blocks sending
        try:
            while True:
                inbox.put(tasks.recv())
        except (EOFError, OSError):
            inbox.put(None)

    threading.Thread(target=receive, daemon=True).start()
    while (task := inbox.get()) is not None:
        try:
            reply = ("ok", build_in_worker(task))
        except Exception as e:  # the parent raises it as its own
            reply = ("error", e)
        try:
            results.send(reply)
        except (BrokenPipeError, OSError):  # the parent is gone
            return


def run_pool(pool: Pool, corpus, opts, workers, writers, progress) -> None:
    """Build windows in the pool, at most 2 per worker in flight, collected in order."""
    inflight: deque = deque()
    for split, index, docs in read_windows(corpus, opts):
        progress.read(len(docs))
        if not writers[split].wants(index):
            continue
        inflight.append(pool.submit((split, index, docs, opts)))
        while len(inflight) >= 2 * workers:
            _collect(pool.result(inflight.popleft()), writers, progress)
    while inflight:
        _collect(pool.result(inflight.popleft()), writers, progress)


def _collect(result, writers, progress) -> None:
    writers[result.split].add(result)
    progress.built(len(result.examples))
