"""What every bertcli tokenizer is to the rest of the code, whatever its algorithm.

A tokenizer directory holds the algorithm's own file(s) (SentencePiece's `spm.model`, WordPiece's
`vocab.txt`) and `bertcli_tokenizer.json`: format and version, the kind, vocab size, the ids of
the five BERT special tokens, the options that change how text is split, the sha256 of each file
and the tokenizer's identity hash. Special ids, the ids never used as random replacements and
the word-start table all come from the loaded tokenizer, never from constants: a bertcli
SentencePiece vocabulary has [PAD]=0 … [MASK]=4, Google's bert-base vocab.txt [PAD]=0, [UNK]=100,
[CLS]=101, [SEP]=102, [MASK]=103.

This module does not train (sentencepiece_model.py, wordpiece.py) or pick the implementation
from a directory (`bertcli.tokenizer.load`).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

from bertcli.errors import UsageError
from bertcli.fsutil import write_bytes_atomic, write_json_atomic

if TYPE_CHECKING:  # numpy costs ~40 ms to import; `bertcli tokenize` never needs it
    import numpy as np

FORMAT = "bertcli-tokenizer"
FORMAT_VERSION = 2  # 1: SentencePiece only, metadata in tokenizer.json, ids fixed at 0-4
META_FILE = "bertcli_tokenizer.json"
SPECIAL_NAMES = ("pad", "unk", "cls", "sep", "mask")
SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
UNUSED = re.compile(r"\[unused\d+\]")  # Google's reserved slots: never a random replacement


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Tokenizer:
    """A loaded tokenizer. Subclasses set `kind`, fill `vocab` and implement the text methods."""

    kind = ""

    def __init__(self, vocab: list[str], special_ids: dict[str, int], meta: dict, path: Path | None, sha256: str):
        self.vocab = vocab  # piece of each id
        self.vocab_size = len(vocab)
        self.meta = meta
        self.path = path
        self.sha256 = sha256  # identity: equal hashes encode text to equal ids
        self.special_ids = {k: int(special_ids[k]) for k in SPECIAL_NAMES}
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (self.special_ids[k] for k in SPECIAL_NAMES)

    @staticmethod
    def load(path: Path) -> "Tokenizer":
        from bertcli.tokenizer import load

        return load(path)

    # --- text ------------------------------------------------------------------------------------
    def encode(self, texts: list[str], threads: int = 1) -> list[list[int]]:
        """Token ids of each text (no [CLS]/[SEP]). Text that spells "[MASK]" is text, not the token."""
        raise NotImplementedError

    def encode_query(self, text: str) -> list[int]:
        """Ids of a text in which "[MASK]", "[SEP]", … are those tokens, as the exported tokenizer reads it."""
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def pieces(self, ids) -> list[str]:
        return [self.vocab[int(i)] for i in ids]

    def pieces_of(self, text: str) -> list[str]:
        return self.pieces(self.encode([text])[0])

    def starts_word(self, piece: str) -> bool:
        raise NotImplementedError

    def piece_text(self, piece: str) -> str:
        """The text a piece stands for, without its word-boundary marker ("▁the" → "the", "##ing" → "ing")."""
        raise NotImplementedError

    # --- tables for masking ----------------------------------------------------------------------
    def never_replace(self) -> "np.ndarray":
        """bool per id: specials and [unused…] slots, never drawn as a random replacement token."""
        import numpy as np

        never = np.array([bool(UNUSED.fullmatch(p)) for p in self.vocab], dtype=bool)
        never[list(self.special_ids.values())] = True
        return never

    def replacement_ids(self) -> "np.ndarray":
        """The ids a masked position may be replaced by at random (ascending)."""
        import numpy as np

        return np.flatnonzero(~self.never_replace()).astype(np.int64)

    def word_starts(self) -> "np.ndarray":
        """bool per id: True where the piece begins a word (whole-word masking groups on this)."""
        import numpy as np

        starts = np.array([self.starts_word(p) for p in self.vocab], dtype=bool)
        starts[self.never_replace()] = True  # a special token or reserved slot is a word of its own
        return starts

    # --- files -----------------------------------------------------------------------------------
    def files(self) -> dict[str, bytes]:
        """The directory's files besides the metadata, as written by `save`."""
        raise NotImplementedError

    def metadata(self) -> dict:
        return {**self.meta, "format": FORMAT, "format_version": FORMAT_VERSION, "kind": self.kind,
                "vocab_size": self.vocab_size, "special_ids": self.special_ids, "special_tokens": SPECIAL_TOKENS,
                "sha256": self.sha256, "files": {name: sha256_bytes(data) for name, data in self.files().items()}}

    def save(self, directory: Path) -> list[str]:
        """Write this tokenizer's files into `directory` (made if missing), each atomically; their names."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = self.files()
        for name, data in files.items():
            write_bytes_atomic(directory / name, data)
        write_json_atomic(directory / META_FILE, self.metadata())
        return [*files, META_FILE]


def find_special_ids(vocab: list[str], where: str, tokens: dict[str, str] | None = None) -> dict[str, int]:
    """The id of each BERT special token in a vocabulary; a one-line error naming a missing one."""
    tokens = tokens or SPECIAL_TOKENS
    index = {}
    for i, piece in enumerate(vocab):
        index.setdefault(piece, i)
    missing = [tokens[k] for k in SPECIAL_NAMES if tokens[k] not in index]
    if missing:
        raise UsageError(f"{where} has no {', '.join(missing)}; a BERT vocabulary needs "
                         f"{', '.join(tokens[k] for k in SPECIAL_NAMES)}")
    return {k: index[tokens[k]] for k in SPECIAL_NAMES}
