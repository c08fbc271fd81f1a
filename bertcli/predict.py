"""`predict`: fill in [MASK] with a checkpoint's masked-LM head, and ask its next-sentence head.

Text is encoded as the exported Hugging Face tokenizer encodes it (`Tokenizer.encode_query`), so
that `bertcli predict` and transformers' fill-mask agree: the special tokens written in the text
(`[MASK]`, also `[SEP]`, `[CLS]`, `[PAD]`, `[UNK]`) are those tokens, at the ids of the
checkpoint's own tokenizer (the copy it carries), and the text between them is encoded as usual.

For each [MASK] the top-k tokens with their probabilities (softmax over the whole vocabulary),
each also as the text it reads as in its place (`word_with`: "##ing" after "walk" reads "walking");
with a second sentence, P(is next) = softmax(NSP logits)[0] (label 0 = actual next, as Google's).
This module does not train, evaluate on data, or decode beyond the one best filling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bertcli.artifacts import checkpoint_tokenizer
from bertcli.errors import UsageError
from bertcli.evaluate import load_model
from bertcli.tokenizer import Tokenizer

BATCH_SIZE = 32
# --file bounds: a text is at most max_position_embeddings tokens (512 for BERT), a few KB of text
MAX_FILE_BYTES = 16 << 20
MAX_LINE_CHARS = 100_000
MAX_QUERIES = 100_000


@dataclass
class Query:
    text: str
    next_text: str | None = None


def read_queries(texts: list[str], next_texts: list[str], file: Path | None) -> list[Query]:
    """TEXT arguments and --file lines (a tab separates a second sentence), paired with --next."""
    queries = [Query(t) for t in texts]
    if file is not None:
        for line in _read_lines(Path(file)):
            if line.strip():
                text, _, second = line.partition("\t")
                queries.append(Query(text, second if second.strip() else None))
        if len(queries) > MAX_QUERIES:
            raise UsageError(f"--file {file} holds {len(queries):,} texts, more than the {MAX_QUERIES:,} predict takes "
                             "at once; split the file")
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


def _read_lines(path: Path) -> list[str]:
    """The lines of --file, read with a bound: a device such as /dev/zero or a pipe that never
    ends stops at MAX_FILE_BYTES instead of filling memory."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"--file {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"--file {path} is a directory; give a text file") from None
    except OSError as e:
        raise UsageError(f"--file {path}: cannot read it ({e.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise UsageError(f"--file {path} is larger than {MAX_FILE_BYTES >> 20} MB (or never ends); predict reads "
                         "one short text per line: split the file")
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UsageError(f"--file {path} is not UTF-8 text (line {line}); convert it, e.g. with iconv") from None
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_LINE_CHARS:
            raise UsageError(f"--file {path}, line {number}: {len(line):,} characters, more than any model's "
                             f"positions can hold (the limit is {MAX_LINE_CHARS:,}); one text per line")
    return lines


def _encode_queries(queries: list[Query], tok: Tokenizer, max_positions: int) -> list[tuple[list[int], int]]:
    """(input ids, where segment B starts) per query, [CLS] A [SEP] (B [SEP])."""
    cls_id, sep_id, mask_id = tok.cls_id, tok.sep_id, tok.mask_id
    encoded = []
    for n, q in enumerate(queries, 1):
        ids = [cls_id, *tok.encode_query(q.text), sep_id]
        b_start = len(ids)
        if q.next_text is not None:
            ids += [*tok.encode_query(q.next_text), sep_id]
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
    encoded = _encode_queries(queries, tok, model.config.max_position_embeddings)
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
            predictions = [{"token": piece, "id": int(i), "probability": float(pr), "word": word_with(tok, ids, p, int(i))}
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


def word_with(tok: Tokenizer, ids: list[int], position: int, candidate: int) -> str:
    """The text `candidate` reads as at `position`: its piece without the word marker ("▁the" → "the"),
    and a piece that continues a word ("##ing", or "ing" without "▁") joined to the pieces of the word
    before it ("walk" + "##ing" → "walking"). Special tokens such as [MASK] bound a word."""
    specials = set(tok.special_ids.values())
    ids = [*ids[:position], candidate, *ids[position + 1:]]
    pieces = tok.pieces(ids)
    if candidate in specials:
        return pieces[position]
    start = position
    while start > 0 and not tok.starts_word(pieces[start]) and ids[start - 1] not in specials:
        start -= 1
    return "".join(tok.piece_text(p) for p in pieces[start:position + 1])
