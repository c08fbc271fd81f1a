"""`bertcli tokenize`: sample the corpus, train a SentencePiece or WordPiece vocabulary, write it.

The sample, the output directory (written under a temporary name, then renamed) and the report
are the same for both algorithms; sentencepiece_model.py and wordpiece.py only train.
"""

from __future__ import annotations

import json
import os
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bertcli.bounds import check_options
from bertcli.errors import DataError, UsageError
from bertcli.fsutil import check_output_dir, output_dir
from bertcli.tokenizer.base import SPECIAL_NAMES
from bertcli.tokenizer.sampling import MAX_SENTENCE_BYTES, drop_long_sentences, sample_sentences

MODEL_TYPES = ("bpe", "unigram", "wordpiece")
VOCAB_NAME = "vocab.txt"


@dataclass
class TrainOptions:
    vocab_size: int = 30522
    model_type: str = "unigram"  # ~3x faster to encode than bpe at the same quality (docs/performance.md)
    lowercase: bool = False
    character_coverage: float = 0.9999
    byte_fallback: bool = False
    input_sentence_size: int = 10_000_000
    threads: int = 0  # 0: all cores
    seed: int = 12345

    def validate(self) -> None:
        """Check every option against what SentencePiece accepts, before any reading."""
        if self.model_type not in MODEL_TYPES:
            raise UsageError(f"--model-type {self.model_type!r} is not one of {', '.join(MODEL_TYPES)}")
        if self.model_type == "wordpiece" and self.byte_fallback:
            raise UsageError("--byte-fallback is a SentencePiece option; WordPiece spells unknown words [UNK]")
        if self.vocab_size <= len(SPECIAL_NAMES):
            raise UsageError(f"--vocab-size {self.vocab_size} leaves no room beside the {len(SPECIAL_NAMES)} special tokens "
                             f"and the corpus's characters; BERT uses 30522")
        # the ranges of vocab_size, character_coverage, input_sentence_size, threads and seed: bounds.OPTIONS
        check_options("tokenize", asdict(self))

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


@contextmanager
def _tokenizer_dir(out_dir: Path, overwrite: bool, inputs: list[Path]):
    """A temporary directory beside --out, swapped into place once the body has filled it.

    Everything about --out is checked before any work (an unwritable --out fails now, not after
    training), and --overwrite replaces only a tokenizer bertcli made, never one of the inputs.
    """
    check_output_dir(out_dir, "tokenizer", overwrite=overwrite, inputs=inputs)
    with output_dir(out_dir, "tokenizer", overwrite=overwrite, inputs=inputs) as tmp:
        yield tmp


def adopt(source: Path, out_dir: Path, lowercase: bool | None = None, words_file: Path | None = None,
          overwrite: bool = False) -> dict:
    """`tokenize --from`: a published BERT vocabulary as a bertcli tokenizer directory; a summary."""
    from bertcli.tokenizer.wordpiece import adopt as adopt_wordpiece

    out_dir = Path(out_dir)
    source = Path(source)
    if not source.exists():
        raise UsageError(f"--from {source} does not exist; give a Google vocab.txt or a Hugging Face BERT tokenizer directory")
    inputs = [source, *([words_file] if words_file else [])]
    check_output_dir(out_dir, "tokenizer", overwrite=overwrite, inputs=inputs)  # before reading the source
    if is_other_hf_tokenizer(source):
        tok, summary = adopt_hf(source, lowercase, words_file)
    else:
        tok, summary = adopt_wordpiece(source, lowercase, words_file)
    with _tokenizer_dir(out_dir, overwrite, inputs) as tmp:
        tok.save(tmp)
    case = {"lowercase": tok.options["lowercase"]} if hasattr(tok, "options") else {}
    return {**summary, "vocab_size": tok.vocab_size, **case, "sha256": tok.sha256}


def is_other_hf_tokenizer(source: Path) -> bool:
    """Whether --from is a Hugging Face directory whose tokenizer.json is not BERT's WordPiece (ModernBERT's BPE...)."""
    path = Path(source) / "tokenizer.json"
    if not path.is_file() or path.stat().st_size > 64 << 20:
        return False  # the WordPiece reader then names the problem
    try:
        model = json.loads(path.read_bytes()).get("model")
    except (ValueError, AttributeError):
        return False
    return isinstance(model, dict) and model.get("type") != "WordPiece"


def adopt_hf(source: Path, lowercase: bool | None, words_file: Path | None) -> tuple:
    """An adopted `tokenizers` tokenizer of another type, with the summary adopt reports."""
    from bertcli.tokenizer.adopted import AdoptedTokenizer

    if lowercase is not None or words_file is not None:
        flag = "--add-words" if words_file is not None else "--lowercase/--no-lowercase"
        raise UsageError(f"{flag} applies to BERT WordPiece vocabularies; {source}'s tokenizer.json is kept as it is")
    tok = AdoptedTokenizer.from_published(source)
    return tok, {"source": str(source), "added_words": [], "known_words": [], "special_ids": tok.special_ids}


def train(corpus, out_dir: Path, options: TrainOptions, overwrite: bool = False) -> TrainReport:
    """Sample the corpus, train, and write a tokenizer directory atomically."""
    options.validate()
    out_dir = Path(out_dir)
    with _tokenizer_dir(out_dir, overwrite, corpus.files) as tmp:
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
        meta = {"options": asdict(options) | {"threads": options.resolved_threads}, "sentences_seen": seen,
                "sentences_sampled": len(sample), "sentences_too_long": too_long}
        if options.model_type == "wordpiece":
            from bertcli.tokenizer.wordpiece import train_wordpiece

            tok = train_wordpiece(sample, options, meta)
        else:
            from bertcli.tokenizer.sentencepiece_model import SentencePieceTokenizer, train_model

            tok = SentencePieceTokenizer(train_model(sample, options), meta)
        seconds = time.perf_counter() - start
        tok.save(tmp)

    # Two hundred sentences (some thousands of words) estimate pieces per word to about a percent;
    # more only slows the summary down.
    rng = random.Random(options.seed)
    probe = rng.sample(sample, min(len(sample), 200))
    words = sum(len(s.split()) for s in probe)
    pieces = sum(len(p) for p in tok.encode(probe, threads=options.resolved_threads))
    shown = [(s, tok.pieces_of(s)) for s in probe[:3]]
    warnings = []
    if invalid := corpus.stats.invalid_utf8_message():
        warnings.append(invalid)
    if too_long:
        warnings.append(f"{too_long} sampled line(s) longer than {MAX_SENTENCE_BYTES} bytes were left out of "
                        f"training (SentencePiece's limit); put one sentence per line to use them")
    if tok.vocab_size < options.vocab_size:
        warnings.append(f"the vocabulary has {tok.vocab_size:,} pieces, fewer than --vocab-size {options.vocab_size:,}: "
                        "the corpus has no more words to split; set the model's vocab_size from the tokenizer (make-data does)")
    return TrainReport(tok.vocab_size, seen, len(sample), seconds, shown, pieces / max(words, 1), warnings)
