"""`make-data`: stream a corpus into sharded, masked pretraining examples (NSP, SOP or packed MLM).

The corpus is read once, in order, and cut into *windows* of whole documents (about
`window_chars` characters each, per split; reading.py). A window is the unit of work: a worker
tokenizes it, its objective builds its instances for every duplication pass (random-next
documents come from the same window, as NVIDIA's per-shard processing does), and they are
shuffled and masked with generators seeded by (seed, split, window index) (windows.py). Results
are written in window order into shards of `shard_size` instances, streamed from the windows'
arrays to disk (writer.py). Hence memory is bounded by the windows in flight plus one shard's
instances (about 35 MB per 100,000 at length 128), not by the corpus, and the output is
byte-identical for any number of workers (pool.py).

After every shard, `progress.json` records where the run stands, so `--resume` recomputes only
what is missing (output.py). The manifest is written last; a directory without one is unfinished.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bertcli import __version__
from bertcli.console import warn
from bertcli.corpus import Corpus
from bertcli.errors import UsageError
from bertcli.fsutil import input_file_problem, own, refuse_overlap, remove_files, remove_temps, write_json_atomic
from bertcli.make_data.diagnostics import check_usable, warnings_about
from bertcli.make_data.options import MakeDataOptions
from bertcli.make_data.output import write_out_dir
from bertcli.make_data.pool import paying_workers, run_pool, worker_pool
from bertcli.make_data.progress import Progress, cpu_time
from bertcli.make_data.reading import read_windows
from bertcli.make_data.windows import build_window, masking_params
from bertcli.make_data.writer import PROGRESS, SplitState, SplitWriter
from bertcli.readers.base import ReaderOptions
from bertcli.shards import FORMAT, MANIFEST, MANIFEST_VERSION, SPLITS, token_dtype
from bertcli.tokenizer import ARTIFACT_DIR, Tokenizer


def make_data(files: list[Path], tokenizer_dir: Path, out_dir: Path, opts: MakeDataOptions,
              resume: bool = False, overwrite: bool = False, show_progress: bool = True,
              reader: ReaderOptions | None = None) -> dict:
    """Run make-data end to end; return the manifest it wrote.

    Everything is validated before --out is touched: options, tokenizer, inputs, and that --out
    neither holds nor lies inside an input. Then output.write_out_dir runs it holding the lock
    on --out (in place, or under a temporary name for --overwrite).
    """
    opts.resolve()
    for f in files:
        if problem := input_file_problem(f):
            raise UsageError(f"input {f} {problem}")
    corpus = Corpus(files, strict=opts.strict, options=reader)  # checks format, encoding, splitter now
    tok = Tokenizer.load(tokenizer_dir)
    out_dir = Path(out_dir)
    dataset = [Path(corpus.options.dataset)] if corpus.options.dataset and Path(corpus.options.dataset).exists() else []
    inputs = [*files, *dataset, tokenizer_dir]
    refuse_overlap(out_dir, inputs)
    expected = {"tokenizer_sha256": tok.sha256, "options": opts.recipe(), "inputs": corpus.fingerprint(),
                "reader": corpus.options.recipe()}

    def run(target: Path, states: dict[str, SplitState]) -> dict:
        return _make_data(corpus, tokenizer_dir, tok, target, opts, expected, states, show_progress)

    return write_out_dir(out_dir, resume, overwrite, inputs, expected, run)


def _make_data(corpus, tokenizer_dir, tok, out_dir, opts, expected, states, show_progress) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        write_json_atomic(out_dir / PROGRESS, {**expected, "splits": {s: asdict(states[s]) for s in SPLITS}})

    writers = {s: SplitWriter(out_dir, s, opts, tok, states[s], save) for s in SPLITS}
    save()
    own(out_dir, [PROGRESS], rewritten=True)
    input_bytes = None if corpus.options.dataset else corpus.stats.total_bytes
    workers = paying_workers(opts.workers or (os.cpu_count() or 1), input_bytes, opts.window_chars)
    started, cpu_started = time.perf_counter(), cpu_time()
    # The pool first: its processes must start before the progress bar's refresh thread does.
    with worker_pool(workers, tokenizer_dir) as pool, Progress(corpus, show_progress) as progress:
        if pool is None:
            params = masking_params(tok, opts)
            for split, index, docs in read_windows(corpus, opts):
                progress.read(len(docs))
                if writers[split].wants(index):
                    result = build_window(split, index, docs, opts, tok, params)
                    writers[split].add(result)
                    progress.built(len(result.examples))
        else:
            run_pool(pool, corpus, opts, workers, writers, progress)
        for w in writers.values():
            w.finish()
    seconds, cpu_seconds = time.perf_counter() - started, cpu_time() - cpu_started

    manifest = {
        "format": FORMAT, "format_version": MANIFEST_VERSION, "created_by": f"bertcli {__version__}",
        # the tokenizer travels with the data in tokenizer/; "path" only says where it came from
        "tokenizer": {"dir": ARTIFACT_DIR, "path": str(Path(tokenizer_dir).resolve()), "sha256": tok.sha256,
                      "vocab_size": tok.vocab_size, "special_ids": tok.special_ids, "kind": tok.kind},
        "options": opts.recipe(), "token_dtype": np.dtype(token_dtype(tok.vocab_size)).name,
        "inputs": expected["inputs"], "input_bytes": corpus.stats.total_bytes,
        "invalid_utf8_lines": corpus.stats.invalid_utf8_lines, "input_format": corpus.describe_format(),
        "reader": expected["reader"], "input_counts": corpus.manifest_entries(), "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "splits": {s: writers[s].summary() for s in SPLITS},
    }
    check_usable(manifest, corpus.files or [corpus.options.dataset], opts, corpus.stats.inputs)
    manifest["warnings"] = warnings_about(manifest, corpus, opts)
    written = tok.save(out_dir / ARTIFACT_DIR)
    own(out_dir, [f"{ARTIFACT_DIR}/{name}" for name in written])
    write_json_atomic(out_dir / MANIFEST, manifest)
    remove_files(out_dir, [PROGRESS])
    own(out_dir, [MANIFEST])
    remove_temps(out_dir)  # a killed earlier run's partial shard; never a name that is not provably ours
    for message in manifest["warnings"]:
        warn(message)
    return manifest
