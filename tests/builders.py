"""What tests build instances and examples from, kept out of the package because only tests use it."""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from bertcli.instances import Window
from bertcli.shards import Examples


def window_of(documents: list[list[list[int]]]) -> Window:
    """A window from documents given as lists of sentences' token ids."""
    return Window.from_encoded([s for d in documents for s in d], [len(d) for d in documents])


def concat_examples(parts: list[Examples]) -> Examples:
    """Examples laid end to end, offsets rebased: what write_shard writes for a list of parts."""
    def joined_offsets(name: str) -> np.ndarray:
        pieces, base = [np.zeros(1, dtype=np.int64)], 0
        for p in parts:
            off = getattr(p, name)
            pieces.append(off[1:] - off[0] + base)
            base += int(off[-1] - off[0])
        return np.concatenate(pieces)

    cat = {f.name: np.concatenate([getattr(p, f.name) for p in parts])
           for f in fields(Examples) if f.name not in ("offsets", "masked_offsets")}
    return Examples(offsets=joined_offsets("offsets"), masked_offsets=joined_offsets("masked_offsets"), **cat)
