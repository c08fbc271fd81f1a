"""Work on one window (runs in a worker process): tokenize its documents, let the objective build
its instances, mask them, and return them as the shard's arrays.

Every generator is seeded by (seed, split, window index), so a window's instances do not depend
on the number of workers or on which worker builds it.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertcli.instances import MaskingParams, SpecialIds, Window, mask_tokens
from bertcli.make_data.options import MakeDataOptions
from bertcli.objectives import get_objective
from bertcli.shards import SPLITS, Examples, token_dtype
from bertcli.tokenizer import Tokenizer


@dataclass
class WindowResult:
    split: str
    index: int
    examples: Examples
    counters: dict  # window-level: documents, sentences, dropped pairs, ...


_worker_tokenizer: Tokenizer | None = None


def init_worker(tokenizer_dir: str) -> None:
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
    built = get_objective(opts.objective).builder.build(window, opts, special, seed, rng)
    if params is None:
        params = masking_params(tok, opts)
    masked = mask_tokens(built.tokens, built.offsets, params, rng)
    dtype = token_dtype(tok.vocab_size)  # the shard's dtype now: less to pickle and to hold until written
    examples = Examples(
        input_ids=masked.input_ids.astype(dtype), offsets=built.offsets, segment_b_start=built.segment_b_start,
        next_sentence_labels=built.labels, fallback=built.fallback,
        masked_positions=masked.positions.astype(np.int32),
        masked_offsets=np.concatenate([[0], np.cumsum(masked.counts)]).astype(np.int64),
        masked_ids=masked.original_ids.astype(dtype))
    sentences = window.sentences_per_document()
    counters = {"documents": window.num_documents, "sentences": window.num_sentences,
                "single_sentence_documents": int((sentences == 1).sum()), **built.counters,
                "windows": 1, "lone_document_windows": int(window.num_documents == 1)}
    return WindowResult(split, index, examples, counters)


def build_in_worker(args) -> WindowResult:
    return build_window(*args)
