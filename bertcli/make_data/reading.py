"""Reading: the corpus's documents cut into windows, per split, in an order that no worker count changes."""

from __future__ import annotations

import random

from bertcli.corpus import Corpus
from bertcli.make_data.options import MakeDataOptions
from bertcli.shards import SPLITS


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
