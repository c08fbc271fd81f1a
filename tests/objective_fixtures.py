"""A tokenizer-free corpus for objective tests: fixed documents and a stand-in tokenizer.

The stand-in maps every 3-character piece of a word to an id by crc32, so tests of how
instances are built do not depend on the SentencePiece version installed.
"""

from __future__ import annotations

import random
import zlib

import numpy as np

from bertcli.instances import SpecialIds

VOCAB_SIZE = 500
NUM_SPECIAL = 5  # bertcli's SentencePiece layout: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4
SPECIAL = SpecialIds(cls=2, sep=3, mask=4)


class PieceTokenizer:
    """What make-data's window builder asks of a tokenizer: encode, ids, replacement ids, word starts."""

    vocab_size = VOCAB_SIZE
    sha256 = "0" * 64
    cls_id, sep_id, mask_id = SPECIAL.cls, SPECIAL.sep, SPECIAL.mask

    def replacement_ids(self) -> np.ndarray:
        return np.arange(NUM_SPECIAL, VOCAB_SIZE, dtype=np.int64)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [[self._id(w[k:k + 3], k == 0) for w in text.split() for k in range(0, len(w), 3)] for text in texts]

    def _id(self, piece: str, word_start: bool) -> int:
        # even ids start words, odd ids continue them (see word_starts)
        half = (VOCAB_SIZE - NUM_SPECIAL) // 2
        return NUM_SPECIAL + 2 * (zlib.crc32(piece.encode()) % half) + (0 if word_start else 1)

    def word_starts(self) -> np.ndarray:
        starts = np.arange(VOCAB_SIZE) % 2 == 0
        starts[:NUM_SPECIAL] = True
        return starts


def documents(count: int = 40, seed: int = 0) -> list[list[str]]:
    """`count` documents of 1-12 sentences of 3-25 made-up words."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    docs = []
    for _ in range(count):
        docs.append([" ".join("".join(rng.choice(letters) for _ in range(rng.randint(1, 9)))
                              for _ in range(rng.randint(3, 25))) + "." for _ in range(rng.randint(1, 12))])
    return docs
