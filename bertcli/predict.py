"""`predict`: fill in [MASK] with a checkpoint's masked-LM head, and ask its next-sentence head.

Text is encoded as the exported Hugging Face tokenizer encodes it (see export.py), so that
`bertcli predict` and transformers' fill-mask agree: the special tokens written in the text
(`[MASK]`, also `[SEP]`, `[CLS]`, `[PAD]`, `[UNK]`) are those tokens, and the text between them
is SentencePiece-encoded piece by piece. Only the start of the text gets SentencePiece's `▁` word
prefix: after a [MASK], "." stays a continuation piece and " is" starts a new word, as in the
training data.

For each [MASK] the top-k tokens with their probabilities (softmax over the whole vocabulary);
with a second sentence, P(is next) = softmax(NSP logits)[0] (label 0 = actual next, as Google's).
This module does not train, evaluate on data, or decode beyond the one best filling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm
import torch

from bertcli.errors import UsageError
from bertcli.evaluate import load_model
from bertcli.export import checkpoint_tokenizer, spm_with_normalizer
from bertcli.tokenizer import SPECIAL_IDS, SPECIAL_TOKENS, WORD_START, Tokenizer

SPECIAL_IN_TEXT = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS.values()) + ")")
ID_OF_SPECIAL = {SPECIAL_TOKENS[k]: i for k, i in SPECIAL_IDS.items()}
BATCH_SIZE = 32


class TextEncoder:
    """Encode text as the exported tokenizer does (without [CLS]/[SEP]); see the module docstring."""

    def __init__(self, tok: Tokenizer):
        model = tok.sp.serialized_model_proto()
        self.tok = tok
        # after a special token, text that does not start with a space continues a word: no `▁`
        self.continuation = spm.SentencePieceProcessor(
            model_proto=spm_with_normalizer(model, add_dummy_prefix=False, remove_extra_whitespaces=True))
        # the normalised text as is, to see whether it starts with a space
        self.raw = spm.SentencePieceProcessor(
            model_proto=spm_with_normalizer(model, add_dummy_prefix=False, remove_extra_whitespaces=False))

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for k, part in enumerate(SPECIAL_IN_TEXT.split(text)):
            if k % 2:  # re.split puts the matched separators at odd indices
                ids.append(ID_OF_SPECIAL[part])
            elif k == 0 or self.raw.normalize(part).startswith(WORD_START):
                ids += self.tok.sp.encode(part)
            else:
                ids += self.continuation.encode(part)
        return ids


@dataclass
class Query:
    text: str
    next_text: str | None = None


def read_queries(texts: list[str], next_texts: list[str], file: Path | None) -> list[Query]:
    """TEXT arguments and --file lines (a tab separates a second sentence), paired with --next."""
    queries = [Query(t) for t in texts]
    if file is not None:
        try:
            lines = Path(file).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise UsageError(f"--file {file} does not exist") from None
        except UnicodeDecodeError:
            raise UsageError(f"--file {file} is not UTF-8 text") from None
        except OSError as e:
            raise UsageError(f"--file {file}: cannot read it ({e.strerror})") from None
        for line in lines:
            if line.strip():
                text, _, second = line.partition("\t")
                queries.append(Query(text, second if second.strip() else None))
    if not queries:
        raise UsageError("nothing to predict: give a TEXT with [MASK] in it, or --file with one text per line")
    if next_texts:
        if len(next_texts) not in (1, len(queries)):
            raise UsageError(f"--next was given {len(next_texts)} times for {len(queries)} texts; "
                             "give it once (for every text) or once per text")
        for q, second in zip(queries, next_texts * len(queries) if len(next_texts) == 1 else next_texts):
            if q.next_text is not None:
                raise UsageError(f"text {q.text[:40]!r} already has a second sentence after a tab in --file; "
                                 "use either the tab or --next")
            q.next_text = second
    return queries


def _encode_queries(queries: list[Query], encoder: TextEncoder, max_positions: int) -> list[tuple[list[int], int]]:
    """(input ids, where segment B starts) per query, [CLS] A [SEP] (B [SEP])."""
    cls_id, sep_id, mask_id = (SPECIAL_IDS[k] for k in ("cls", "sep", "mask"))
    encoded = []
    for n, q in enumerate(queries, 1):
        ids = [cls_id, *encoder.encode(q.text), sep_id]
        b_start = len(ids)
        if q.next_text is not None:
            ids += [*encoder.encode(q.next_text), sep_id]
        if mask_id not in ids and q.next_text is None:
            raise UsageError(f"text {n} ({q.text[:40]!r}) has no [MASK]; write [MASK] where a token should be "
                             "predicted, or give --next to ask only whether a second sentence follows")
        if len(ids) > max_positions:
            raise UsageError(f"text {n} ({q.text[:40]!r}) is {len(ids)} tokens with [CLS]/[SEP], more than the "
                             f"model's {max_positions} positions; shorten it")
        encoded.append((ids, b_start))
    return encoded


def predict(checkpoint: Path, queries: list[Query], top_k: int = 5, tokenizer_dir: Path | None = None,
            device: torch.device = torch.device("cpu")) -> list[dict]:
    """One result per query: the top-k fillers of each [MASK], P(is next) when a second sentence is given."""
    if top_k < 1:
        raise UsageError(f"--top-k {top_k} must be at least 1")
    model, state, ckpt = load_model(checkpoint, device)
    if not model.sentence_task and any(q.next_text is not None for q in queries):
        raise UsageError(f"checkpoint {ckpt} was trained with objective mlm and has no sentence head; drop --next")
    tok = checkpoint_tokenizer(ckpt, state, tokenizer_dir)
    encoder = TextEncoder(tok)
    encoded = _encode_queries(queries, encoder, model.config.max_position_embeddings)
    top_k = min(top_k, tok.vocab_size)
    results = []
    for start in range(0, len(encoded), BATCH_SIZE):
        batch = encoded[start:start + BATCH_SIZE]
        results += _predict_batch(model, tok, queries[start:start + BATCH_SIZE], batch, top_k, device)
    return results


def _predict_batch(model, tok: Tokenizer, queries: list[Query], batch: list[tuple[list[int], int]],
                   top_k: int, device: torch.device) -> list[dict]:
    B, T = len(batch), max(len(ids) for ids, _ in batch)
    positions = [[p for p, i in enumerate(ids) if i == tok.mask_id] for ids, _ in batch]
    P = max(1, max(len(p) for p in positions))
    input_ids = torch.full((B, T), tok.pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((B, T), dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.long)
    masked_positions = torch.zeros((B, P), dtype=torch.long)  # padding slots point at [CLS]; ignored
    for b, ((ids, b_start), pos) in enumerate(zip(batch, positions)):
        input_ids[b, :len(ids)] = torch.tensor(ids)
        token_type_ids[b, b_start:len(ids)] = 1
        attention_mask[b, :len(ids)] = 1
        masked_positions[b, :len(pos)] = torch.tensor(pos, dtype=torch.long)
    with torch.inference_mode():
        out = model(input_ids.to(device), token_type_ids.to(device), attention_mask.to(device), masked_positions.to(device))
    probs = out.mlm_logits.float().softmax(-1).view(B, P, -1).cpu()  # (B, P, V)
    top_p, top_ids = probs.topk(top_k, dim=-1)  # (B, P, k), sorted descending
    # label 0 = actual next (nsp) or in order (sop); an mlm model has no head (and no --next)
    is_next = None if out.nsp_logits is None else out.nsp_logits.float().softmax(-1)[:, 0].cpu()
    results = []
    for b, (q, (ids, b_start), pos) in enumerate(zip(queries, batch, positions)):
        masks, filled = [], list(ids)
        for slot, p in enumerate(pos):
            predictions = [{"token": piece, "id": int(i), "probability": float(pr)}
                           for piece, i, pr in zip(tok.pieces(top_ids[b, slot]), top_ids[b, slot], top_p[b, slot])]
            masks.append({"position": p, "predictions": predictions})
            filled[p] = predictions[0]["id"]
        result = {"text": q.text, "next": q.next_text, "masks": masks,
                  "filled": tok.decode(filled[1:b_start - 1])}
        if q.next_text is not None:
            result["filled_next"] = tok.decode(filled[b_start:-1])
            result["is_next_probability"] = float(is_next[b])
        results.append(result)
    return results
