"""Train and load a SentencePiece tokenizer with BERT's special tokens at fixed ids.

A tokenizer directory holds `spm.model` (the SentencePiece model), `vocab.txt` (one piece and
its score per line, for people) and `tokenizer.json` (versioned metadata: vocab size, special
ids, training options, the model's sha256). Later commands take the directory, read the
vocabulary size and special ids from it, and check the hash against what the data was made
with. This module does not split text into documents (corpus.py) or build examples.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import multiprocessing as mp
import os
import random
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import sentencepiece as spm

from bertcli.errors import DataError, UsageError
from bertcli.fsutil import TMP_PREFIX, prepare_out_dir, read_json, replace_dir, write_bytes_atomic, write_json_atomic

if TYPE_CHECKING:  # numpy costs ~40 ms to import; `bertcli tokenize` never needs it
    import numpy as np

FORMAT = "bertcli-tokenizer"
FORMAT_VERSION = 1
MODEL_FILE, VOCAB_FILE, META_FILE = "spm.model", "vocab.txt", "tokenizer.json"

# Fixed ids, the same for every bertcli tokenizer. [CLS]/[SEP]/[MASK] are SentencePiece *control*
# symbols: they have ids but text that spells "[MASK]" never encodes to them.
SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
SPECIAL_IDS = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
NUM_SPECIAL = len(SPECIAL_IDS)
WORD_START = "\u2581"  # SentencePiece's "▁": the piece begins a new word
# SentencePiece's trainer drops longer lines (in bytes) without a word; we pass the limit
# explicitly and leave such lines out ourselves, so that they can be counted and reported.
MAX_SENTENCE_BYTES = 4192
MAX_VOCAB_SIZE = 2**31 - 1  # SentencePiece ids are int32
MAX_THREADS = 1024  # SentencePiece's own bound
MIN_CHARACTER_COVERAGE = 0.98  # SentencePiece refuses lower values


@dataclass
class TrainOptions:
    vocab_size: int = 30522
    model_type: str = "bpe"
    lowercase: bool = False
    character_coverage: float = 0.9999
    byte_fallback: bool = False
    input_sentence_size: int = 10_000_000
    threads: int = 0  # 0: all cores
    seed: int = 12345

    def validate(self) -> None:
        """Check every option against what SentencePiece accepts, before any reading."""
        if self.model_type not in ("unigram", "bpe"):
            raise UsageError(f"--model-type {self.model_type!r} is not one of unigram, bpe")
        if self.vocab_size <= NUM_SPECIAL:
            raise UsageError(f"--vocab-size {self.vocab_size} leaves no room beside the {NUM_SPECIAL} special tokens "
                             f"and the corpus's characters; BERT uses 30522")
        if self.vocab_size > MAX_VOCAB_SIZE:
            raise UsageError(f"--vocab-size {self.vocab_size} is above SentencePiece's limit of {MAX_VOCAB_SIZE}; BERT uses 30522")
        if not MIN_CHARACTER_COVERAGE <= self.character_coverage <= 1.0:
            raise UsageError(f"--character-coverage {self.character_coverage} must be between "
                             f"{MIN_CHARACTER_COVERAGE} and 1 (SentencePiece's range)")
        if self.input_sentence_size < 1:
            raise UsageError(f"--input-sentence-size {self.input_sentence_size} must be at least 1")
        if not 0 <= self.threads <= MAX_THREADS:
            raise UsageError(f"--threads {self.threads} must be between 0 (all cores) and {MAX_THREADS}")
        if not 0 <= self.seed < 2**32:
            raise UsageError(f"--seed {self.seed} must be between 0 and {2**32 - 1}")

    @property
    def resolved_threads(self) -> int:
        return self.threads or (os.cpu_count() or 1)


@dataclass
class TrainReport:
    vocab_size: int
    sentences_seen: int
    sentences_sampled: int
    seconds: float
    samples: list[tuple[str, list[str]]]
    pieces_per_word: float
    warnings: list[str]  # what the user should know although the run succeeded


def sample_sentences(sentences: Iterable[str], size: int, seed: int) -> tuple[list[str], int]:
    """A uniform random sample of at most `size` sentences, in one pass with bounded memory.

    Reservoir sampling (Vitter's algorithm R), seeded so that the same corpus gives the same
    sample. Returns the sample and how many sentences were seen.
    """
    rng = random.Random(seed)
    remaining = iter(sentences)
    sample = list(itertools.islice(remaining, size))  # filling the reservoir needs no random draws
    seen = len(sample)
    for seen, sentence in enumerate(remaining, seen + 1):
        j = rng.randrange(seen)  # keep the seen-th sentence with probability size / seen
        if j < size:
            sample[j] = sentence
    return sample, seen


def drop_long_sentences(sentences: list[str], limit: int = MAX_SENTENCE_BYTES) -> list[str]:
    """The sentences of at most `limit` UTF-8 bytes, the ones SentencePiece will train on.

    Applied to the sample rather than to the stream, where a per-line Python call costs more
    than the rest of the reading.
    """
    # A character is at most 4 UTF-8 bytes, so only long strings need encoding to be measured.
    short = limit // 4
    return [s for s in sentences if len(s) <= short or len(s.encode("utf-8")) <= limit]


def trainer_kwargs(options: TrainOptions) -> dict:
    """SentencePiece trainer settings for a BERT vocabulary (shared with the overhead benchmark)."""
    return dict(
        vocab_size=options.vocab_size,
        model_type=options.model_type,
        character_coverage=options.character_coverage,
        byte_fallback=options.byte_fallback,
        normalization_rule_name="nmt_nfkc_cf" if options.lowercase else "nmt_nfkc",
        pad_id=SPECIAL_IDS["pad"], pad_piece=SPECIAL_TOKENS["pad"],
        unk_id=SPECIAL_IDS["unk"], unk_piece=SPECIAL_TOKENS["unk"],
        bos_id=-1, eos_id=-1,
        control_symbols=[SPECIAL_TOKENS[k] for k in ("cls", "sep", "mask")],
        max_sentence_length=MAX_SENTENCE_BYTES,
        num_threads=options.resolved_threads,
        minloglevel=2,
    )


def _explain_trainer_error(err: RuntimeError, vocab_size: int) -> UsageError:
    """Turn SentencePiece's raw check failures into a sentence that says what to do."""
    text = str(err)
    if m := re.search(r"Vocabulary size too high.*?<= (\d+)", text):
        return UsageError(f"--vocab-size {vocab_size} is more than this corpus supports; "
                          f"the largest that works is {m.group(1)} (or add more text)")
    if m := re.search(r"smaller than required_chars\. \d+ vs (\d+)", text):
        return UsageError(f"--vocab-size {vocab_size} is below the {m.group(1)} characters and special "
                          f"tokens this corpus needs; use at least {m.group(1)} or lower --character-coverage")
    if "all_chars_count" in text or "sentences_.empty()" in text:
        return UsageError("the corpus has no characters to learn from once normalised (only control or "
                          "whitespace characters); give a text corpus")
    return UsageError(f"SentencePiece could not train: {' '.join(text.split()) or repr(err)}")


def _train_from_file(conn, sample_path: str, options: TrainOptions) -> None:
    """In a fresh child process: train on the sample file, send back the model or the error."""
    try:
        with open(sample_path, encoding="utf-8") as f:
            sentences = f.read().split("\n")[:-1]
        # An iterator, not input=path: the model records its input path, and must not differ by it.
        spm.set_random_generator_seed(options.seed)
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model,
                                       input_sentence_size=0, **trainer_kwargs(options))
        conn.send(("ok", model.getvalue()))
    except RuntimeError as e:
        conn.send(("error", str(e)))
    finally:
        conn.close()


def train_model(sentences: list[str], options: TrainOptions) -> bytes:
    """Train on an in-memory sample and return the serialized model.

    SentencePiece's trainer is C++ that does not return to Python until it is done, so Ctrl-C
    would wait for the end of training. It therefore runs in a child process, fed the sample
    through a temporary file, while this process waits, ready to stop it. The child is spawned,
    not forked: forking a process whose SentencePiece or OpenMP threads already ran can deadlock.
    """
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bertcli-spm-") as tmp:
        sample_path = os.path.join(tmp, "sample.txt")
        with open(sample_path, "w", encoding="utf-8") as f:
            for sentence in sentences:
                f.write(sentence)
                f.write("\n")
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_train_from_file, args=(send, sample_path, options), daemon=True)
        child.start()
        send.close()
        try:
            while not receive.poll(0.1):
                if not child.is_alive() and not receive.poll(0):
                    raise DataError(f"SentencePiece training died (exit code {child.exitcode}); "
                                    "it may have run out of memory: lower --input-sentence-size")
            status, payload = receive.recv()
        except BaseException:
            child.kill()
            raise
        finally:
            child.join(timeout=10)
            receive.close()
    if status == "error":
        raise _explain_trainer_error(RuntimeError(payload), options.vocab_size)
    return payload


def _refuse_out_dir_holding_inputs(out_dir: Path, files: list[Path]) -> None:
    """Replacing --out deletes what is in it: never let that be the corpus."""
    out = out_dir.resolve()
    for f in files:
        if out in Path(f).resolve().parents:
            raise UsageError(f"--out {out_dir} holds the input {f}; writing the tokenizer there would delete it, "
                             f"choose another directory")


def train(corpus, out_dir: Path, options: TrainOptions, overwrite: bool = False) -> TrainReport:
    """Sample the corpus, train, and write a tokenizer directory atomically."""
    options.validate()
    out_dir = Path(out_dir)
    _refuse_out_dir_holding_inputs(out_dir, corpus.files)
    prepare_out_dir(out_dir, overwrite, "tokenizer")
    # Made before training, so that an unwritable --out fails now rather than after the work.
    final = out_dir.resolve()  # `--out .` has no name to put the temporary directory beside
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}.{os.getpid()}")
    try:
        tmp.mkdir(exist_ok=True)
    except OSError as e:
        raise DataError(f"--out {out_dir}: cannot write in {final.parent} ({e.strerror}); choose another directory") from None
    try:
        start = time.perf_counter()
        sample, seen = sample_sentences(corpus.sentences(), options.input_sentence_size, options.seed)
        sampled = len(sample)
        sample = drop_long_sentences(sample)
        too_long = sampled - len(sample)
        if not sample:
            names = ", ".join(map(str, corpus.files[:3])) + (", …" if len(corpus.files) > 3 else "")
            if too_long:
                raise UsageError(f"all {sampled} sampled line(s) of the corpus ({names}) are longer than "
                                 f"{MAX_SENTENCE_BYTES} bytes, SentencePiece's limit; put one sentence per line")
            raise UsageError(f"the corpus ({names}) has no non-empty lines; give a text corpus")
        model = train_model(sample, options)
        seconds = time.perf_counter() - start

        write_bytes_atomic(tmp / MODEL_FILE, model)
        tok = Tokenizer(model, meta={})
        ids = list(range(tok.vocab_size))
        # `+ 0.0` turns BPE's first score, -0.0, into 0 so that vocab.txt does not say "-0"
        vocab_lines = "".join(f"{piece}\t{score + 0.0:g}\n"
                              for piece, score in zip(tok.sp.id_to_piece(ids), tok.sp.get_score(ids)))
        write_bytes_atomic(tmp / VOCAB_FILE, vocab_lines.encode())
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "vocab_size": tok.vocab_size,
            "special_ids": SPECIAL_IDS,
            "special_tokens": SPECIAL_TOKENS,
            "sha256": hashlib.sha256(model).hexdigest(),
            "options": asdict(options) | {"threads": options.resolved_threads},
            "sentences_seen": seen,
            "sentences_sampled": len(sample),
            "sentences_too_long": too_long,
        }
        write_json_atomic(tmp / META_FILE, meta)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    # Two hundred sentences (some thousands of words) estimate pieces per word to about a percent;
    # more only slows the summary down.
    rng = random.Random(options.seed)
    probe = rng.sample(sample, min(len(sample), 200))
    words = sum(len(s.split()) for s in probe)
    pieces = sum(len(p) for p in tok.encode(probe, threads=options.resolved_threads))
    shown = [(s, tok.sp.encode(s, out_type=str)) for s in probe[:3]]
    warnings = []
    if invalid := corpus.stats.invalid_utf8_message():
        warnings.append(invalid)
    if too_long:
        warnings.append(f"{too_long} sampled line(s) longer than {MAX_SENTENCE_BYTES} bytes were left out of "
                        f"training (SentencePiece's limit); put one sentence per line to use them")
    return TrainReport(tok.vocab_size, seen, len(sample), seconds, shown, pieces / max(words, 1), warnings)


class Tokenizer:
    """A loaded tokenizer: SentencePiece plus bertcli's metadata."""

    def __init__(self, model: bytes, meta: dict, path: Path | None = None):
        self.sp = spm.SentencePieceProcessor(model_proto=model)
        self.meta = meta
        self.path = path
        self.sha256 = hashlib.sha256(model).hexdigest()
        self.vocab_size = self.sp.get_piece_size()
        self.special_ids = dict(SPECIAL_IDS)
        self.pad_id, self.cls_id, self.sep_id, self.mask_id = (SPECIAL_IDS[k] for k in ("pad", "cls", "sep", "mask"))

    @classmethod
    def load(cls, path: Path) -> "Tokenizer":
        path = Path(path)
        if not path.is_dir():
            raise UsageError(f"tokenizer directory {path} does not exist; make one with `bertcli tokenize`")
        meta_path = path / META_FILE
        if not meta_path.is_file() or not (path / MODEL_FILE).is_file():
            raise UsageError(f"{path} is not a bertcli tokenizer (no {META_FILE} / {MODEL_FILE}); make one with `bertcli tokenize`")
        meta = read_json(meta_path, "tokenizer metadata")
        if meta.get("format") != FORMAT:
            raise UsageError(f"{meta_path} is not a bertcli tokenizer; make one with `bertcli tokenize`")
        if meta.get("format_version") != FORMAT_VERSION:
            raise UsageError(f"{meta_path} has format_version {meta.get('format_version')}, this bertcli reads {FORMAT_VERSION}; retrain it")
        model = (path / MODEL_FILE).read_bytes()
        if hashlib.sha256(model).hexdigest() != meta.get("sha256"):
            raise UsageError(f"{path / MODEL_FILE} does not match the sha256 in {META_FILE}; the tokenizer was modified, retrain it")
        try:
            tok = cls(model, meta, path)
        except RuntimeError:
            raise UsageError(f"{path / MODEL_FILE} is not a SentencePiece model; retrain the tokenizer") from None
        for name, i in SPECIAL_IDS.items():
            if tok.sp.id_to_piece(i) != SPECIAL_TOKENS[name]:
                raise UsageError(f"{path / MODEL_FILE}: id {i} is not {SPECIAL_TOKENS[name]}; it was not made by `bertcli tokenize`")
        return tok

    def encode(self, texts: list[str], threads: int = 1) -> list[list[int]]:
        """Token ids of each text (no [CLS]/[SEP]); `threads` encodes in parallel."""
        return self.sp.encode(texts, num_threads=threads)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def normalize(self, text: str) -> str:
        """The text as the tokenizer sees it (NFKC, runs of spaces collapsed, case-folded if trained
        --lowercase): what decode(encode(text)) gives back when no piece is [UNK]."""
        return self.sp.normalize(text).replace(WORD_START, " ").removeprefix(" ")

    def pieces(self, ids) -> list[str]:
        return [self.sp.id_to_piece(int(i)) for i in ids]

    def word_starts(self) -> np.ndarray:
        """bool per id: True where the piece begins a word (whole-word masking groups on this)."""
        import numpy as np

        starts = np.array([piece.startswith(WORD_START) for piece in self.sp.id_to_piece(list(range(self.vocab_size)))])
        starts[:NUM_SPECIAL] = True
        return starts
