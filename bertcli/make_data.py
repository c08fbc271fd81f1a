"""`make-data`: stream a corpus into sharded, masked pretraining examples (NSP, SOP or packed MLM).

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
import signal
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bertcli import __version__
from bertcli.console import console, warn
from bertcli.corpus import Corpus
from bertcli.readers.base import ReaderOptions
from bertcli.errors import BertcliError, DataError, UsageError
from bertcli.fsutil import (OWNER_FILE, TMP_PREFIX, DirLock, atomic_directory, check_output_dir, input_file_problem,
                            mark_owned, read_json, read_owner, refuse_overlap, sha256_file, writable_problem,
                            write_json_atomic)
from bertcli.instances import MaskingParams, SpecialIds, Window, assemble, mask_tokens, plan_pairs, truncate
from bertcli.objectives import OBJECTIVES, packed_instances, plan_sop_pairs
from bertcli.shards import FORMAT, MANIFEST, MANIFEST_VERSION, MAX_SEQ_LENGTH, SPLITS, Examples, token_dtype, write_shard
from bertcli.tokenizer import ARTIFACT_DIR, Tokenizer

PROGRESS = "progress.json"
MASKED_LM_PROB_RANGE = (0.05, 0.5)  # BERT's 0.15 up to the 20-40 % of MosaicBERT, cramming and ModernBERT
SHORT_SEQ_PROB = 0.1  # BERT's, for nsp and sop (mlm packs every sequence full)


@dataclass
class MakeDataOptions:
    objective: str = "nsp"  # nsp (BERT), sop (ALBERT's sentence order) or mlm (packed, no pairs: RoBERTa)
    cross_document: bool = True  # mlm: sequences run on across documents ([SEP] between them)
    max_seq_length: int = 128
    max_predictions: int | None = None  # None: ceil(max_seq_length * masked_lm_prob), 20 at 128 as Google
    masked_lm_prob: float = 0.15
    mask_replace_prob: float = 0.8  # a chosen position becomes [MASK] ...
    random_replace_prob: float = 0.1  # ... or a random token; it stays as it is otherwise
    short_seq_prob: float | None = None  # None: 0.1 for nsp and sop; mlm refuses it
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
        if self.objective not in OBJECTIVES:
            raise UsageError(f"--objective {self.objective!r} must be one of {', '.join(OBJECTIVES)}")
        if self.objective == "mlm" and self.short_seq_prob is not None:
            # Refused rather than ignored: a user who sets it expects shorter sequences, and mlm has none.
            raise UsageError("--short-seq-prob has no meaning with --objective mlm (every sequence is packed to "
                             "--max-seq-length); drop it")
        if self.objective != "mlm" and not self.cross_document:
            raise UsageError(f"--no-cross-document applies to --objective mlm only ({self.objective} pairs never "
                             "cross documents); drop it")
        if self.short_seq_prob is None and self.objective != "mlm":
            self.short_seq_prob = SHORT_SEQ_PROB
        if not 8 <= self.max_seq_length <= MAX_SEQ_LENGTH:
            problems.append(f"--max-seq-length {self.max_seq_length} must be between 8 and {MAX_SEQ_LENGTH}")
        low, high = MASKED_LM_PROB_RANGE
        if not low <= self.masked_lm_prob <= high:
            problems.append(f"--masked-lm-prob {self.masked_lm_prob} must be between {low} and {high}")
        if not (0.0 <= self.mask_replace_prob <= 1.0 and 0.0 <= self.random_replace_prob <= 1.0
                and self.mask_replace_prob + self.random_replace_prob <= 1.0 + 1e-9):
            problems.append(f"--mask-replace-prob {self.mask_replace_prob} and --random-replace-prob "
                            f"{self.random_replace_prob} must be in [0, 1] and add up to at most 1 (the rest stays unchanged)")
        if self.short_seq_prob is not None and not 0.0 <= self.short_seq_prob < 1.0:
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
    # Ctrl-C reaches the whole process group: the parent handles it and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_tokenizer = Tokenizer.load(Path(tokenizer_dir))


def masking_params(tok: Tokenizer, opts: MakeDataOptions) -> MaskingParams:
    return MaskingParams.from_tokenizer(tok, opts.masked_lm_prob, opts.max_predictions, opts.whole_word_mask,
                                        opts.mask_replace_prob, opts.random_replace_prob)


def window_seed(seed: int, split: str, index: int) -> list[int]:
    return [seed, SPLITS.index(split), index]


def build_window(split: str, index: int, documents: list[list[str]], opts: MakeDataOptions,
                 tokenizer: Tokenizer | None = None, params: MaskingParams | None = None) -> WindowResult:
    """Tokenize a window of documents and turn it into shuffled, masked instances."""
    tok = tokenizer or _worker_tokenizer
    window = Window.from_encoded(tok.encode([s for doc in documents for s in doc]), [len(doc) for doc in documents])
    seed = window_seed(opts.seed, split, index)
    rng = np.random.default_rng(seed)
    special = SpecialIds.of(tok)
    if opts.objective == "mlm":
        tokens, offsets, sequence_documents = packed_instances(window, opts.max_seq_length, opts.cross_document,
                                                               opts.dupe_factor, special, rng)
        segment_b_start = np.diff(offsets).astype(np.int32)  # no segment B: every segment id is 0
        labels = fallback = np.zeros(len(offsets) - 1, dtype=np.uint8)
        counters = {"dropped_pairs": 0, "long_sentences": 0, "sequence_documents": sequence_documents}
    else:
        plan = plan_pairs if opts.objective == "nsp" else plan_sop_pairs
        pairs, stats = plan(window, opts.max_seq_length - 3, opts.short_seq_prob, opts.dupe_factor,
                            random.Random("/".join(map(str, seed))))
        pairs = truncate(pairs, opts.max_seq_length - 3, rng)
        pairs = pairs.take(rng.permutation(len(pairs)))  # Google shuffles all instances of all passes
        tokens, offsets, segment_b_start = assemble(window, pairs, special)
        labels, fallback = pairs.is_random_next, pairs.fallback  # sop: is_random_next holds "swapped"
        counters = {"dropped_pairs": stats.dropped_pairs, "long_sentences": stats.long_sentences}
    if params is None:
        params = masking_params(tok, opts)
    masked = mask_tokens(tokens, offsets, params, rng)
    dtype = token_dtype(tok.vocab_size)  # the shard's dtype now: less to pickle and to hold until written
    examples = Examples(
        input_ids=masked.input_ids.astype(dtype), offsets=offsets, segment_b_start=segment_b_start,
        next_sentence_labels=labels, fallback=fallback,
        masked_positions=masked.positions.astype(np.int32),
        masked_offsets=np.concatenate([[0], np.cumsum(masked.counts)]).astype(np.int64),
        masked_ids=masked.original_ids.astype(dtype))
    sentences = window.sentences_per_document()
    counters = {"documents": window.num_documents, "sentences": window.num_sentences,
                "single_sentence_documents": int((sentences == 1).sum()), **counters,
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
        stats = {
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
        }
        if self.opts.objective == "sop":  # label 1 is "swapped"; B never comes from elsewhere
            stats = {"swapped_fraction": stats.pop("random_next_fraction"), **stats}
            del stats["fallback_pairs"]
        elif self.opts.objective == "mlm":  # no pairs: how full and how mixed the packed sequences are
            for key in ("random_next_fraction", "fallback_pairs", "dropped_pairs", "long_sentences"):
                del stats[key]
            stats = {"documents_per_sequence": c.get("sequence_documents", 0) / n if n else 0.0, **stats}
        return {
            "instances": n, "tokens": tokens, "masked_tokens": total("masked_tokens"),
            "documents": c.get("documents", 0), "sentences": c.get("sentences", 0),
            "shards": [{k: s[k] for k in ("file", "instances", "tokens", "sha256")} for s in shards],
            "stats": stats,
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
            try:
                path = out_dir / shard["file"]
                intact = path.parent == out_dir / split and path.is_file() and sha256_file(path) == shard["sha256"]
            except (KeyError, TypeError, OSError):
                intact = False
            if not intact:
                raise DataError(f"--resume: {out_dir / str(shard.get('file') if isinstance(shard, dict) else '?')} is "
                                "missing or damaged; rerun with --overwrite to start over")
            keep.add(path.name)
        _remove_our_leftovers(out_dir / split, keep)
    return states


def _is_ours(name: str) -> bool:
    """A name make-data writes in a split folder: a shard, or a shard's temporary file."""
    return name.startswith(TMP_PREFIX) or (name.startswith("shard-") and name.endswith(".safetensors"))


def _remove_our_leftovers(split_dir: Path, keep: set[str]) -> None:
    """Delete partial shards after the last recorded one; anything else is not ours to delete."""
    if split_dir.is_dir():
        for stray in split_dir.iterdir():
            if stray.name not in keep and _is_ours(stray.name) and stray.is_file():
                stray.unlink()


def make_data(files: list[Path], tokenizer_dir: Path, out_dir: Path, opts: MakeDataOptions,
              resume: bool = False, overwrite: bool = False, show_progress: bool = True,
              reader: ReaderOptions | None = None) -> dict:
    """Run make-data end to end; return the manifest it wrote.

    Everything is validated before --out is touched: options, tokenizer, inputs, and that --out
    neither holds nor lies inside an input. Then, holding the lock on --out:
    - a new (or empty) --out is written in place and marked as bertcli's data, so that an
      interruption (Ctrl-C, SIGTERM, SIGHUP, a kill) leaves finished shards and progress.json
      for `--resume`; an expected failure (empty corpus, full disk) removes what it wrote;
    - `--overwrite` of an earlier make-data output builds the new one under a temporary name and
      swaps it in at the end: until then the old data is untouched, and stays if the run fails.
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

    if not resume:
        _check_fresh_out_dir(out_dir, overwrite, inputs)
    with DirLock(out_dir, "make-data --out"):
        if resume:
            states = _resume_states(out_dir, expected)
        elif _has_entries(out_dir):  # checked above: --overwrite of our own data
            try:
                with atomic_directory(out_dir, "data") as tmp:
                    return run(tmp, {s: SplitState() for s in SPLITS})
            except KeyboardInterrupt:
                warn(f"make-data interrupted; {out_dir} still holds the old data (the replacement was discarded)")
                raise
        else:
            states = {s: SplitState() for s in SPLITS}
        existed = out_dir.is_dir()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            if read_owner(out_dir) is None:
                mark_owned(out_dir, "data")
            return run(out_dir, states)
        except BertcliError:
            if not resume:
                _discard(out_dir, existed)
            raise
        except KeyboardInterrupt:  # Ctrl-C, and SIGTERM / SIGHUP under the CLI (bertcli.stopping)
            warn(f"make-data interrupted; finished shards are kept in {out_dir}: rerun the same command with --resume")
            raise


def _has_entries(out_dir: Path) -> bool:
    return out_dir.is_dir() and any(e.name != OWNER_FILE for e in out_dir.iterdir())


def _check_fresh_out_dir(out_dir: Path, overwrite: bool, inputs: list[Path]) -> None:
    """A fresh run's --out: missing, empty, or (with --overwrite) an earlier make-data output."""
    if _has_entries(out_dir) and not overwrite:
        hint = "pass --resume to continue the interrupted run, " if (out_dir / PROGRESS).is_file() else ""
        raise UsageError(f"--out {out_dir} is not empty; {hint}pass --overwrite to replace it (only data bertcli "
                         "made is replaced), or choose another directory")
    check_output_dir(out_dir, "data", overwrite=overwrite, inputs=inputs)


def _resume_states(out_dir: Path, expected: dict) -> dict[str, SplitState]:
    """What an interrupted run in --out already wrote, checked; refuses anything else."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a directory")
    if (out_dir / MANIFEST).is_file():
        raise UsageError(f"--resume: {out_dir} is already complete (it has {MANIFEST}); nothing to do")
    owner = read_owner(out_dir)
    if owner is not None and owner["kind"] != "data":
        raise UsageError(f"--resume: {out_dir} holds a bertcli {owner['kind']}, not make-data output; choose "
                         "another directory")
    if (out_dir / PROGRESS).is_file():
        return _load_resume_state(out_dir, expected)
    if out_dir.is_dir() and _only_leftovers(out_dir):  # killed before the first progress record
        for split in SPLITS:
            _remove_our_leftovers(out_dir / split, set())
        for leftover in out_dir.glob(f"{TMP_PREFIX}*"):
            leftover.unlink() if leftover.is_file() else None
        return {s: SplitState() for s in SPLITS}
    if _has_entries(out_dir):
        raise UsageError(f"--resume: {out_dir} holds no make-data progress; use --overwrite to start over")
    if problem := writable_problem(out_dir):
        raise UsageError(f"--out {out_dir}: cannot write there ({problem}); choose another directory")
    return {s: SplitState() for s in SPLITS}


def _only_leftovers(out_dir: Path) -> bool:
    """True when a directory holds nothing but our marker and temporary files (in it or its split folders)."""
    for child in out_dir.iterdir():
        if child.is_dir() and child.name in SPLITS:
            if any(not c.name.startswith(TMP_PREFIX) for c in child.iterdir()):
                return False
        elif not child.name.startswith(TMP_PREFIX) and child.name != OWNER_FILE:
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
    # The pool first: its processes must start before the progress bar's refresh thread does.
    with _worker_pool(workers, tokenizer_dir) as pool, _Progress(corpus, show_progress) as progress:
        if pool is None:
            params = masking_params(tok, opts)
            for split, index, docs in read_windows(corpus, opts):
                progress.read(len(docs))
                if writers[split].wants(index):
                    result = build_window(split, index, docs, opts, tok, params)
                    writers[split].add(result)
                    progress.built(len(result.examples))
        else:
            _run_pool(pool, corpus, opts, workers, writers, progress)
        for w in writers.values():
            w.finish()
    seconds, cpu_seconds = time.perf_counter() - started, _cpu_seconds() - cpu_started

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
    _check_usable(manifest, corpus.files or [corpus.options.dataset], opts)
    tok.save(out_dir / ARTIFACT_DIR)
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


@contextmanager
def _worker_pool(workers: int, tokenizer_dir: Path):
    """A pool of `workers` processes (None for one worker: build in this process).

    Spawned, not forked: a fork copies this process's threads' locks in whatever state they
    are (SentencePiece, OpenMP, rich), which can deadlock, and fork is unsafe on macOS. Spawning
    costs each worker an import of bertcli (a fraction of a second), once per run.
    """
    if workers == 1:
        yield None
        return
    pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(str(tokenizer_dir),))
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


def _run_pool(pool, corpus, opts, workers, writers, progress) -> None:
    """Build windows in the pool, at most 2 per worker in flight, collected in order."""
    inflight: deque = deque()
    for split, index, docs in read_windows(corpus, opts):
        progress.read(len(docs))
        if not writers[split].wants(index):
            continue
        inflight.append(pool.apply_async(_build_in_worker, ((split, index, docs, opts),)))
        while len(inflight) >= 2 * workers:
            _collect(inflight.popleft(), writers, progress)
    while inflight:
        _collect(inflight.popleft(), writers, progress)


def _collect(async_result, writers, progress) -> None:
    result = async_result.get()
    writers[result.split].add(result)
    progress.built(len(result.examples))


def _check_usable(manifest: dict, files: list[Path], opts: MakeDataOptions) -> None:
    train = manifest["splits"]["train"]
    names = ", ".join(map(str, files[:3])) + (", ..." if len(files) > 3 else "")
    single = train["stats"].get("single_sentence_documents", 0)
    if opts.objective == "sop" and single > 0.5 * train["documents"]:
        # Such a document gives no sentence-order pair: most likely a blank line after every sentence.
        raise UsageError(f"--objective sop needs documents of several sentences, but {single} of {train['documents']} "
                         f"documents of {names} have one (is there a blank line after every sentence?); fix the "
                         "blank lines or use --objective mlm")
    if train["instances"] == 0:
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
    pairs = opts.objective == "nsp"  # these warnings are about next-sentence pairs (sop refuses; mlm has none)
    if pairs and train["documents"] == 1:
        warn(f"the train split is a single document, so no random next sentence can come from another document: "
             f"all {stats['fallback_pairs']} pairs that wanted one fell back to the actual next sentence "
             f"({stats['dropped_pairs']} had none and were dropped); separate documents with blank lines")
    elif pairs and stats["fallback_pairs"] + stats["dropped_pairs"]:
        warn(f"{stats['fallback_pairs']} pairs fell back to the actual next sentence and {stats['dropped_pairs']} were "
             "dropped because no other document was in reach (a window with a single document); "
             "give more documents or a larger --window-chars")
    if pairs and stats["single_sentence_documents"] > 0.5 * train["documents"] > 0:
        warn(f"{stats['single_sentence_documents']} of {train['documents']} documents have a single sentence: "
             f"{_SINGLE_SENTENCE_HINT.get(corpus.describe_format(), _SINGLE_SENTENCE_HINT['lines'])}; pairs "
             "never span documents, so next-sentence prediction cannot learn from such a corpus")
    long_sentences = sum(manifest["splits"][s]["stats"].get("long_sentences", 0) for s in SPLITS)
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
