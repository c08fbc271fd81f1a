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
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import sentencepiece as spm

from bertcli.errors import UsageError
from bertcli.fsutil import TMP_PREFIX, prepare_out_dir, read_json, replace_dir, write_bytes_atomic, write_json_atomic

FORMAT = "bertcli-tokenizer"
FORMAT_VERSION = 1
MODEL_FILE, VOCAB_FILE, META_FILE = "spm.model", "vocab.txt", "tokenizer.json"

# Fixed ids, the same for every bertcli tokenizer. [CLS]/[SEP]/[MASK] are SentencePiece *control*
# symbols: they have ids but text that spells "[MASK]" never encodes to them.
SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
SPECIAL_IDS = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
NUM_SPECIAL = len(SPECIAL_IDS)
WORD_START = "\u2581"  # SentencePiece's "▁": the piece begins a new word


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
        if self.model_type not in ("unigram", "bpe"):
            raise UsageError(f"--model-type {self.model_type!r} is not one of unigram, bpe")
        if self.vocab_size <= NUM_SPECIAL:
            raise UsageError(f"--vocab-size {self.vocab_size} leaves no room beside the {NUM_SPECIAL} special tokens; use at least 100")
        if not 0.0 < self.character_coverage <= 1.0:
            raise UsageError(f"--character-coverage {self.character_coverage} must be in (0, 1]")
        if self.input_sentence_size < 1:
            raise UsageError("--input-sentence-size must be at least 1")

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
    invalid_utf8: str | None


def sample_sentences(sentences: Iterable[str], size: int, seed: int) -> tuple[list[str], int]:
    """A uniform random sample of at most `size` sentences, in one pass with bounded memory.

    Reservoir sampling (Vitter's algorithm R), seeded so that the same corpus gives the same
    sample. Returns the sample and how many sentences were seen.
    """
    rng = random.Random(seed)
    sample: list[str] = []
    seen = 0
    for seen, sentence in enumerate(sentences, 1):
        if len(sample) < size:
            sample.append(sentence)
        else:
            j = rng.randrange(seen)
            if j < size:
                sample[j] = sentence
    return sample, seen


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
    return UsageError(f"SentencePiece could not train: {text.splitlines()[-1] if text else err!r}")


def train_model(sentences: list[str], options: TrainOptions) -> bytes:
    """Train on an in-memory sample and return the serialized model."""
    spm.set_random_generator_seed(options.seed)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model,
                                       input_sentence_size=0, **trainer_kwargs(options))
    except RuntimeError as e:
        raise _explain_trainer_error(e, options.vocab_size) from None
    return model.getvalue()


def train(corpus, out_dir: Path, options: TrainOptions, overwrite: bool = False) -> TrainReport:
    """Sample the corpus, train, and write a tokenizer directory atomically."""
    options.validate()
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir, overwrite, "tokenizer")
    start = time.perf_counter()
    sample, seen = sample_sentences(corpus.sentences(), options.input_sentence_size, options.seed)
    if not sample:
        raise UsageError(f"the corpus ({', '.join(map(str, corpus.files[:3]))}) has no non-empty lines; give a text corpus")
    model = train_model(sample, options)
    seconds = time.perf_counter() - start

    tmp = out_dir.with_name(f"{TMP_PREFIX}{out_dir.name}.{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        write_bytes_atomic(tmp / MODEL_FILE, model)
        tok = Tokenizer(model, meta={})
        vocab_lines = "".join(f"{tok.sp.id_to_piece(i)}\t{tok.sp.get_score(i):g}\n" for i in range(tok.vocab_size))
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
        }
        write_json_atomic(tmp / META_FILE, meta)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    rng = random.Random(options.seed)
    probe = rng.sample(sample, min(len(sample), 1000))
    words = sum(len(s.split()) for s in probe)
    pieces = sum(len(p) for p in tok.encode(probe))
    shown = [(s, tok.sp.encode(s, out_type=str)) for s in probe[:3]]
    return TrainReport(tok.vocab_size, seen, len(sample), seconds, shown, pieces / max(words, 1),
                       corpus.stats.invalid_utf8_message())


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

    def pieces(self, ids) -> list[str]:
        return [self.sp.id_to_piece(int(i)) for i in ids]

    def word_starts(self) -> np.ndarray:
        """bool per id: True where the piece begins a word (whole-word masking groups on this)."""
        starts = np.array([self.sp.id_to_piece(i).startswith(WORD_START) for i in range(self.vocab_size)])
        starts[:NUM_SPECIAL] = True
        return starts
