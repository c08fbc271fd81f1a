"""`make-data`: stream a corpus into sharded, masked NSP pretraining examples.

The corpus is read once, in order, and cut into *windows* of whole documents (about
`window_chars` characters each, per split). A window is the unit of work: a worker tokenizes it,
builds its pairs for every duplication pass (random-next documents come from the same window,
as NVIDIA's per-shard processing does), shuffles and masks them with generators seeded by
(seed, split, window index). Results are written in window order into shards of `shard_size`
instances, streamed from the windows' arrays to disk. Hence memory is bounded by the windows in
flight plus one shard's instances (about 35 MB per 100,000 at length 128), not by the corpus, and
the output is byte-identical for any number of workers.

After every shard, `progress.json` records the finished shards and where the next one starts
(window, offset), so `--resume` keeps verified shards and recomputes only what is missing. The
manifest is written last; a directory without one is unfinished.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import random
import shutil
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bertcli import __version__
from bertcli.console import console, warn
from bertcli.corpus import Corpus
from bertcli.readers.base import ReaderOptions
from bertcli.errors import BertcliError, DataError, UsageError
from bertcli.fsutil import TMP_PREFIX, read_json, sha256_file, write_json_atomic
from bertcli.instances import MaskingParams, Window, assemble, mask_tokens, plan_pairs, truncate
from bertcli.shards import FORMAT, FORMAT_VERSION, MANIFEST, SPLITS, Examples, token_dtype, write_shard
from bertcli.tokenizer import Tokenizer

PROGRESS = "progress.json"
MAX_SEQ_LIMIT = 512  # BERT's max_position_embeddings; longer needs a model made for it


@dataclass
class MakeDataOptions:
    max_seq_length: int = 128
    max_predictions: int | None = None  # None: ceil(max_seq_length * masked_lm_prob), 20 at 128 as Google
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    dupe_factor: int = 5
    whole_word_mask: bool = False
    seed: int = 12345
    validation_fraction: float = 0.01
    shard_size: int = 100_000
    window_chars: int = 1_000_000
    workers: int = 0  # 0: all cores; does not change the output
    strict: bool = False

    def resolve(self) -> "MakeDataOptions":
        problems = []
        if not 8 <= self.max_seq_length <= MAX_SEQ_LIMIT:
            problems.append(f"--max-seq-length {self.max_seq_length} must be between 8 and {MAX_SEQ_LIMIT}")
        if not 0.0 < self.masked_lm_prob < 1.0:
            problems.append(f"--masked-lm-prob {self.masked_lm_prob} must be in (0, 1)")
        if not 0.0 <= self.short_seq_prob < 1.0:
            problems.append(f"--short-seq-prob {self.short_seq_prob} must be in [0, 1)")
        if not 0.0 <= self.validation_fraction < 1.0:
            problems.append(f"--validation-fraction {self.validation_fraction} must be in [0, 1)")
        if self.dupe_factor < 1:
            problems.append("--dupe-factor must be at least 1")
        if self.shard_size < 1:
            problems.append("--shard-size must be at least 1")
        if self.window_chars < 1:
            problems.append("--window-chars must be at least 1")
        if self.workers < 0:
            problems.append("--workers must be 0 (all cores) or more")
        if self.max_predictions is not None and not 1 <= self.max_predictions <= self.max_seq_length - 3:
            problems.append(f"--max-predictions {self.max_predictions} must be between 1 and max_seq_length - 3 "
                            f"({self.max_seq_length - 3}), the positions an instance can mask")
        if problems:
            raise UsageError("; ".join(problems))
        if self.max_predictions is None:
            derived = math.ceil(self.max_seq_length * self.masked_lm_prob - 1e-9)
            self.max_predictions = min(max(1, derived), self.max_seq_length - 3)
        return self

    def recipe(self) -> dict:
        """Options that determine the output (workers and strictness do not)."""
        d = asdict(self)
        for k in ("workers", "strict"):
            d.pop(k)
        return d


# ---------------------------------------------------------------------------------------------
# Work on one window (runs in a worker process)

@dataclass
class WindowResult:
    split: str
    index: int
    examples: Examples
    counters: dict  # window-level: documents, sentences, dropped pairs, ...


_worker_tokenizer: Tokenizer | None = None


def _init_worker(tokenizer_dir: str) -> None:
    global _worker_tokenizer
    _worker_tokenizer = Tokenizer.load(Path(tokenizer_dir))


def window_seed(seed: int, split: str, index: int) -> list[int]:
    return [seed, SPLITS.index(split), index]


def build_window(split: str, index: int, documents: list[list[str]], opts: MakeDataOptions,
                 tokenizer: Tokenizer | None = None, word_starts: np.ndarray | None = None) -> WindowResult:
    """Tokenize a window of documents and turn it into shuffled, masked instances."""
    tok = tokenizer or _worker_tokenizer
    window = Window.from_encoded(tok.encode([s for doc in documents for s in doc]), [len(doc) for doc in documents])
    seed = window_seed(opts.seed, split, index)
    pairs, stats = plan_pairs(window, opts.max_seq_length - 3, opts.short_seq_prob, opts.dupe_factor,
                              random.Random("/".join(map(str, seed))))
    rng = np.random.default_rng(seed)
    pairs = truncate(pairs, opts.max_seq_length - 3, rng)
    pairs = pairs.take(rng.permutation(len(pairs)))  # Google shuffles all instances of all passes
    tokens, offsets, segment_b_start = assemble(window, pairs)
    if word_starts is None and opts.whole_word_mask:
        word_starts = tok.word_starts()
    params = MaskingParams(opts.masked_lm_prob, opts.max_predictions, tok.vocab_size, opts.whole_word_mask, word_starts)
    masked = mask_tokens(tokens, offsets, params, rng)
    dtype = token_dtype(tok.vocab_size)  # the shard's dtype now: less to pickle and to hold until written
    examples = Examples(
        input_ids=masked.input_ids.astype(dtype), offsets=offsets, segment_b_start=segment_b_start,
        next_sentence_labels=pairs.is_random_next, fallback=pairs.fallback,
        masked_positions=masked.positions.astype(np.int32),
        masked_offsets=np.concatenate([[0], np.cumsum(masked.counts)]).astype(np.int64),
        masked_ids=masked.original_ids.astype(dtype))
    sentences = window.sentences_per_document()
    counters = {"documents": window.num_documents, "sentences": window.num_sentences,
                "single_sentence_documents": int((sentences == 1).sum()),
                "dropped_pairs": stats.dropped_pairs, "long_sentences": stats.long_sentences,
                "windows": 1, "lone_document_windows": int(window.num_documents == 1)}
    return WindowResult(split, index, examples, counters)


def _build_in_worker(args) -> WindowResult:
    return build_window(*args)


# ---------------------------------------------------------------------------------------------
# Reading: documents → windows, per split

def read_windows(corpus: Corpus, opts: MakeDataOptions):
    """Yield (split, window index, documents) in a fixed order that does not depend on workers.

    A window closes once it holds `window_chars` characters. It is held back until the next one
    is half full: if the corpus ends first, the short tail joins it rather than becoming a
    window of a few documents, where most random-next draws would have to fall back.
    """
    choose = random.Random(f"{opts.seed}/validation")
    filling: dict[str, list] = {s: [] for s in SPLITS}
    size = dict.fromkeys(SPLITS, 0)
    held: dict[str, list | None] = dict.fromkeys(SPLITS)
    count = dict.fromkeys(SPLITS, 0)
    for doc in corpus.documents():
        split = "validation" if choose.random() < opts.validation_fraction else "train"
        filling[split].append(doc)
        size[split] += sum(map(len, doc))
        if held[split] is not None and 2 * size[split] >= opts.window_chars:
            yield split, count[split], held[split]
            held[split] = None
            count[split] += 1
        if size[split] >= opts.window_chars:
            held[split], filling[split], size[split] = filling[split], [], 0
    for split in SPLITS:
        if held[split] is not None:
            yield split, count[split], held[split] + filling[split]
        elif filling[split]:
            yield split, count[split], filling[split]


# ---------------------------------------------------------------------------------------------
# Writing: windows → shards, with a resumable cursor

@dataclass
class SplitState:
    """What is on disk for one split; saved in progress.json after every shard."""

    shards: list = field(default_factory=list)
    next_window: int = 0  # the first window not completely written
    next_offset: int = 0  # instances of that window already written
    counters: dict = field(default_factory=dict)  # window counters of completely written windows


class SplitWriter:
    """Cuts one split's stream of windows into shards of `shard_size`, saving progress after each."""

    def __init__(self, out_dir: Path, split: str, opts: MakeDataOptions, tok: Tokenizer, state: SplitState, save):
        self.dir = out_dir / split
        self.dir.mkdir(parents=True, exist_ok=True)
        self.split, self.opts, self.state, self.save = split, opts, state, save
        self.dtype, self.tokenizer_sha256 = token_dtype(tok.vocab_size), tok.sha256
        self.pending: list[tuple[int, int, Examples]] = []  # (window, offset in window, examples)
        self.pending_counters: dict[int, dict] = {}
        self.windows_added = state.next_window

    def wants(self, window: int) -> bool:
        return window >= self.state.next_window

    def add(self, result: WindowResult) -> None:
        start = self.state.next_offset if result.index == self.state.next_window else 0
        examples = result.examples.slice(start, len(result.examples)) if start else result.examples
        if len(examples):
            self.pending.append((result.index, start, examples))
        self.pending_counters[result.index] = result.counters
        self.windows_added = result.index + 1
        while sum(len(e) for _, _, e in self.pending) >= self.opts.shard_size:
            self._write(self.opts.shard_size)

    def finish(self) -> None:
        while self.pending:
            self._write(self.opts.shard_size)
        self._advance_cursor()
        self.save()

    def _write(self, n: int) -> None:
        taken, rest, need = [], [], n
        for window, offset, ex in self.pending:
            if need >= len(ex):
                taken.append(ex)
                need -= len(ex)
            elif need > 0:
                taken.append(ex.slice(0, need))
                rest.append((window, offset + need, ex.slice(need, len(ex))))
                need = 0
            else:
                rest.append((window, offset, ex))
        name = f"{self.split}/shard-{len(self.state.shards):05d}.safetensors"
        sha = write_shard(self.dir.parent / name, taken, self.dtype,
                          {"split": self.split, "shard": str(len(self.state.shards)),
                           "tokenizer_sha256": self.tokenizer_sha256})
        self.state.shards.append({
            "file": name, "instances": sum(map(len, taken)), "tokens": sum(p.num_tokens for p in taken),
            "masked_tokens": sum(p.num_masked for p in taken),
            "random_next": sum(int(p.next_sentence_labels.sum()) for p in taken),
            "fallback_pairs": sum(int(p.fallback.sum()) for p in taken), "sha256": sha})
        self.pending = rest
        self._advance_cursor()
        self.save()

    def _advance_cursor(self) -> None:
        if self.pending:
            self.state.next_window, self.state.next_offset = self.pending[0][0], self.pending[0][1]
        else:
            self.state.next_window, self.state.next_offset = self.windows_added, 0
        for window in sorted(w for w in self.pending_counters if w < self.state.next_window):
            for key, value in self.pending_counters.pop(window).items():
                self.state.counters[key] = self.state.counters.get(key, 0) + value

    def summary(self) -> dict:
        shards = self.state.shards
        total = lambda key: sum(s[key] for s in shards)  # noqa: E731
        n, tokens = total("instances"), total("tokens")
        c = self.state.counters
        return {
            "instances": n, "tokens": tokens, "masked_tokens": total("masked_tokens"),
            "documents": c.get("documents", 0), "sentences": c.get("sentences", 0),
            "shards": [{k: s[k] for k in ("file", "instances", "tokens", "sha256")} for s in shards],
            "stats": {
                "random_next_fraction": total("random_next") / n if n else 0.0,
                "mean_length": tokens / n if n else 0.0,
                "padding_fraction": 1.0 - tokens / (n * self.opts.max_seq_length) if n else 0.0,
                "masked_per_instance": total("masked_tokens") / n if n else 0.0,
                "masked_fraction": total("masked_tokens") / tokens if tokens else 0.0,
                "fallback_pairs": total("fallback_pairs"),
                "dropped_pairs": c.get("dropped_pairs", 0),
                "long_sentences": c.get("long_sentences", 0),
                "single_sentence_documents": c.get("single_sentence_documents", 0),
                "windows": c.get("windows", 0),
            },
        }


# ---------------------------------------------------------------------------------------------
# The command

def _load_resume_state(out_dir: Path, expected: dict) -> dict[str, SplitState]:
    progress = read_json(out_dir / PROGRESS, "make-data progress")
    for key in ("tokenizer_sha256", "options", "inputs", "reader"):
        if progress.get(key) != expected[key]:
            raise UsageError(f"--resume: {out_dir} was started with different {key.replace('_', ' ')}; "
                             "rerun with the same inputs and options, or use --overwrite to start over")
    try:
        states = {s: SplitState(**progress["splits"][s]) for s in SPLITS}
    except (KeyError, TypeError):
        raise DataError(f"--resume: {out_dir / PROGRESS} is malformed; use --overwrite to start over") from None
    for split, state in states.items():
        keep = set()
        for shard in state.shards:
            path = out_dir / shard["file"]
            if not path.is_file() or sha256_file(path) != shard["sha256"]:
                raise DataError(f"--resume: {path} is missing or damaged; rerun with --overwrite to start over")
            keep.add(path.name)
        split_dir = out_dir / split
        if split_dir.is_dir():
            for stray in split_dir.iterdir():  # partial shards after the last recorded one
                if stray.name not in keep:
                    stray.unlink()
    return states


def make_data(files: list[Path], tokenizer_dir: Path, out_dir: Path, opts: MakeDataOptions,
              resume: bool = False, overwrite: bool = False, show_progress: bool = True,
              reader: ReaderOptions | None = None) -> dict:
    """Run make-data end to end; return the manifest it wrote.

    An expected failure (bad input, empty corpus, full disk) of a fresh run removes what it
    wrote. An interruption (Ctrl-C, a crash, a kill) keeps the finished shards and
    progress.json for `--resume`.
    """
    opts.resolve()
    corpus = Corpus(files, strict=opts.strict, options=reader)  # checks format, encoding, splitter now
    tok = Tokenizer.load(tokenizer_dir)
    out_dir = Path(out_dir)
    expected = {"tokenizer_sha256": tok.sha256, "options": opts.recipe(), "inputs": corpus.fingerprint(),
                "reader": corpus.options.recipe()}
    states = _prepare_out_dir(out_dir, expected, resume, overwrite)
    existed = out_dir.is_dir()
    try:
        return _make_data(corpus, tokenizer_dir, tok, out_dir, opts, expected, states, show_progress)
    except BertcliError:
        if not resume:
            _discard(out_dir, existed)
        raise
    except KeyboardInterrupt:
        warn(f"make-data interrupted; finished shards are kept in {out_dir}: rerun the same command with --resume")
        raise


def _prepare_out_dir(out_dir: Path, expected: dict, resume: bool, overwrite: bool) -> dict[str, SplitState]:
    """Check --out against --resume / --overwrite; return what is already written per split."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a directory")
    if resume and (out_dir / MANIFEST).is_file():
        raise UsageError(f"--resume: {out_dir} is already complete (it has {MANIFEST}); nothing to do")
    if resume and (out_dir / PROGRESS).is_file():
        return _load_resume_state(out_dir, expected)
    if resume and out_dir.is_dir() and _only_leftovers(out_dir):
        shutil.rmtree(out_dir)  # killed before the first progress record: nothing to keep
        return {s: SplitState() for s in SPLITS}
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if resume:
            raise UsageError(f"--resume: {out_dir} holds no make-data progress; use --overwrite to start over")
        if not overwrite:
            raise UsageError(f"--out {out_dir} is not empty; pass --resume to continue an interrupted run, "
                             "--overwrite to replace it, or choose another directory")
        shutil.rmtree(out_dir)
    return {s: SplitState() for s in SPLITS}


def _only_leftovers(out_dir: Path) -> bool:
    """True when a directory holds nothing but temporary files (in it or in its split folders)."""
    for child in out_dir.iterdir():
        if child.is_dir() and child.name in SPLITS:
            if any(not c.name.startswith(TMP_PREFIX) for c in child.iterdir()):
                return False
        elif not child.name.startswith(TMP_PREFIX):
            return False
    return True


def _discard(out_dir: Path, existed: bool) -> None:
    """Remove a failed fresh run's output (keeping a directory the user had made, empty)."""
    if not existed:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    for child in out_dir.iterdir():
        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


def _make_data(corpus, tokenizer_dir, tok, out_dir, opts, expected, states, show_progress) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        write_json_atomic(out_dir / PROGRESS, {**expected, "splits": {s: asdict(states[s]) for s in SPLITS}})

    writers = {s: SplitWriter(out_dir, s, opts, tok, states[s], save) for s in SPLITS}
    save()
    workers = opts.workers or (os.cpu_count() or 1)
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    with _Progress(corpus, show_progress) as progress:
        if workers == 1:
            word_starts = tok.word_starts() if opts.whole_word_mask else None
            for split, index, docs in read_windows(corpus, opts):
                progress.read(len(docs))
                if writers[split].wants(index):
                    result = build_window(split, index, docs, opts, tok, word_starts)
                    writers[split].add(result)
                    progress.built(len(result.examples))
        else:
            _run_pool(corpus, opts, tokenizer_dir, workers, writers, progress)
        for w in writers.values():
            w.finish()
    seconds, cpu_seconds = time.perf_counter() - started, _cpu_seconds() - cpu_started

    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "created_by": f"bertcli {__version__}",
        "tokenizer": {"path": str(Path(tokenizer_dir).resolve()), "sha256": tok.sha256, "vocab_size": tok.vocab_size,
                      "special_ids": tok.special_ids},
        "options": opts.recipe(), "token_dtype": np.dtype(token_dtype(tok.vocab_size)).name,
        "inputs": expected["inputs"], "input_bytes": corpus.stats.total_bytes,
        "invalid_utf8_lines": corpus.stats.invalid_utf8_lines, "input_format": corpus.describe_format(),
        "reader": expected["reader"], "input_counts": corpus.manifest_entries(), "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "splits": {s: writers[s].summary() for s in SPLITS},
    }
    _check_usable(manifest, corpus.files or [corpus.options.dataset])
    write_json_atomic(out_dir / MANIFEST, manifest)
    (out_dir / PROGRESS).unlink(missing_ok=True)
    for leftover in out_dir.rglob(f"{TMP_PREFIX}*"):
        leftover.unlink()
    _warn_about(manifest, corpus, opts)
    return manifest


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pool's workers, once joined)."""
    try:
        import resource
    except ImportError:  # not on Windows: this process only
        return time.process_time()
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _run_pool(corpus, opts, tokenizer_dir, workers, writers, progress) -> None:
    """Build windows in `workers` processes, at most 2 per worker in flight, collected in order."""
    ctx = mp.get_context("spawn" if os.name != "posix" else "fork")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(str(tokenizer_dir),)) as pool:
        inflight: deque = deque()
        try:
            for split, index, docs in read_windows(corpus, opts):
                progress.read(len(docs))
                if not writers[split].wants(index):
                    continue
                inflight.append(pool.apply_async(_build_in_worker, ((split, index, docs, opts),)))
                while len(inflight) >= 2 * workers:
                    _collect(inflight.popleft(), writers, progress)
            while inflight:
                _collect(inflight.popleft(), writers, progress)
        except BaseException:
            pool.terminate()
            raise


def _collect(async_result, writers, progress) -> None:
    result = async_result.get()
    writers[result.split].add(result)
    progress.built(len(result.examples))


def _check_usable(manifest: dict, files: list[Path]) -> None:
    train = manifest["splits"]["train"]
    if train["instances"] == 0:
        names = ", ".join(map(str, files[:3])) + (", ..." if len(files) > 3 else "")
        if train["documents"] == 0:
            raise DataError(f"no training instances: the corpus ({names}) holds no text for the train split; "
                            "give text, one sentence per line")
        raise DataError(f"no training instances: the corpus ({names}) is too short (a single one-sentence document "
                        "cannot make a pair); give more text")


_SINGLE_SENTENCE_HINT = {
    "lines": "is there a blank line between every sentence? Blank lines separate documents",
    "text": "with --input-format text every paragraph is a document: pass --document-per-file if each file is one",
}
_SINGLE_SENTENCE_HINT.update(dict.fromkeys(("jsonl", "parquet", "dataset"), "each record is one document: are the "
                                           "records single sentences, or is --text-field a title?"))


def _warn_about(manifest: dict, corpus: Corpus, opts: MakeDataOptions) -> None:
    if msg := corpus.stats.invalid_utf8_message():
        warn(msg)
    for msg in corpus.stats.warnings(corpus.options):
        warn(msg)
    train = manifest["splits"]["train"]
    stats = train["stats"]
    if train["documents"] == 1:
        warn(f"the train split is a single document, so no random next sentence can come from another document: "
             f"all {stats['fallback_pairs']} pairs that wanted one fell back to the actual next sentence "
             f"({stats['dropped_pairs']} had none and were dropped); separate documents with blank lines")
    elif stats["fallback_pairs"] + stats["dropped_pairs"]:
        warn(f"{stats['fallback_pairs']} pairs fell back to the actual next sentence and {stats['dropped_pairs']} were "
             "dropped because no other document was in reach (a window with a single document); "
             "give more documents or a larger --window-chars")
    if stats["single_sentence_documents"] > 0.5 * train["documents"] > 0:
        warn(f"{stats['single_sentence_documents']} of {train['documents']} documents have a single sentence: "
             f"{_SINGLE_SENTENCE_HINT.get(corpus.describe_format(), _SINGLE_SENTENCE_HINT['lines'])}; pairs "
             "never span documents, so next-sentence prediction cannot learn from such a corpus")
    long_sentences = sum(manifest["splits"][s]["stats"]["long_sentences"] for s in SPLITS)
    if long_sentences:
        warn(f"{long_sentences} sentence(s) are longer than max_seq_length - 3 = {opts.max_seq_length - 3} tokens "
             "and were truncated; split long lines into sentences, or raise --max-seq-length")
    if opts.validation_fraction > 0 and manifest["splits"]["validation"]["instances"] == 0:
        warn("the validation split is empty: raise --validation-fraction or give more documents")


class _Progress:
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
