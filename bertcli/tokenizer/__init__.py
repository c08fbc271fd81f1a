"""Tokenizers: one interface (base.Tokenizer); SentencePiece, WordPiece and adopted Hugging Face ones.

`load(path)` reads a bertcli tokenizer directory of either kind;
`load_artifact_tokenizer` finds the copy a data directory or checkpoint carries. Nothing else in
bertcli imports sentencepiece or tokenizers.
"""

from __future__ import annotations

from pathlib import Path

from bertcli.errors import UsageError
from bertcli.fsutil import read_json
from bertcli.tokenizer.base import (FORMAT, FORMAT_VERSION, META_FILE, SPECIAL_NAMES, SPECIAL_TOKENS,  # noqa: F401
                                    Tokenizer)
from bertcli.tokenizer.sampling import MAX_SENTENCE_BYTES, drop_long_sentences, sample_sentences  # noqa: F401
from bertcli.tokenizer.sentencepiece_model import (MODEL_FILE, VOCAB_FILE, WORD_START,  # noqa: F401
                                                   SentencePieceTokenizer, trainer_kwargs)
from bertcli.tokenizer.training import MODEL_TYPES, TrainOptions, TrainReport, adopt, train  # noqa: F401

ARTIFACT_DIR = "tokenizer"  # the subdirectory of a data directory, checkpoint or export that holds the tokenizer


def load(path: Path) -> Tokenizer:
    """The tokenizer in directory `path`, its files checked against their hashes."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"tokenizer directory {path} does not exist; make one with `bertcli tokenize`")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise UsageError(f"{path} is not a bertcli tokenizer (no {META_FILE}); make one with `bertcli tokenize`")
    meta = read_json(meta_path, "tokenizer metadata")
    if problem := meta_problem(meta):
        raise UsageError(f"{meta_path}: {problem}; it was edited, remake the tokenizer with `bertcli tokenize`")
    if meta.get("format") != FORMAT:
        raise UsageError(f"{meta_path} is not a bertcli tokenizer; make one with `bertcli tokenize`")
    if meta.get("format_version") != FORMAT_VERSION:
        raise UsageError(f"{meta_path} has format_version {meta.get('format_version')}, this bertcli reads "
                         f"{FORMAT_VERSION}; retrain it with `bertcli tokenize`")
    kind = meta.get("kind")
    if kind == "sentencepiece":
        return SentencePieceTokenizer.from_dir(path, meta, META_FILE)
    if kind == "wordpiece":
        from bertcli.tokenizer.wordpiece import WordPieceTokenizer

        return WordPieceTokenizer.from_dir(path, meta)
    if kind == "hf":
        from bertcli.tokenizer.adopted import AdoptedTokenizer

        return AdoptedTokenizer.from_dir(path, meta)
    raise UsageError(f"{meta_path}: unknown tokenizer kind {str(kind)[:40]!r} (sentencepiece, wordpiece or hf); it was "
                     "edited, remake it")


# The metadata keys whose type the loaders rely on (None: the key may be absent).
META_TYPES = {"special_ids": dict, "files": dict, "options": dict, "sha256": str, "kind": str}


def meta_problem(meta: dict) -> str | None:
    """What is wrong with the shape of a bertcli_tokenizer.json, before any value is used."""
    for key, kind in META_TYPES.items():
        if key in meta and not isinstance(meta[key], kind):
            return f"{key} is a {type(meta[key]).__name__}, not a {kind.__name__}"
    ids = meta.get("special_ids", {})
    if set(ids) - set(SPECIAL_NAMES) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 1 << 20
                                                for i in ids.values()):
        return f"special_ids must map {', '.join(SPECIAL_NAMES)} to ids below {1 << 20}"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.get("files", {}).items()):
        return "files must map file names to sha256 strings"
    return None


def load_artifact_tokenizer(artifact: Path, expected_sha256: str | None, what: str = "") -> Tokenizer:
    """The tokenizer an artifact carries in `tokenizer/`; it must be the one the artifact was made with."""
    artifact = Path(artifact)
    carried = artifact / ARTIFACT_DIR
    where = what or str(artifact)
    if carried.is_dir():
        tok = load(carried)
    else:
        raise UsageError(f"{where} does not carry its tokenizer ({carried} is missing); pass --tokenizer DIR")
    if expected_sha256 and tok.sha256 != expected_sha256:
        raise UsageError(f"tokenizer {tok.path} is not the one {where} was made with "
                         f"(sha256 {tok.sha256[:12]}… vs {expected_sha256[:12]}…); remake {where} or pass the matching --tokenizer")
    return tok
