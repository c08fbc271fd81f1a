"""SentencePiece → Hugging Face: the fast tokenizer that gives a SentencePiece model's ids.

The tokenizer is rebuilt from the SentencePiece model's own parts (vocabulary, scores and the
precompiled normalisation map, read from its protobuf): BPE merges ranked by the score of the
merged piece (SentencePiece merges the best-scoring adjacent pair first), or the unigram scores;
NFKC + SentencePiece's map for normalisation; runs of spaces collapsed and trailing spaces dropped;
Metaspace `▁` splitting. As in every Hugging Face tokenizer, the special tokens written in text
(`[MASK]`, `[SEP]`, …) are those tokens; bertcli's own tokenizer reads them as plain text, which is
what pretraining data wants. `bertcli predict` reads them as the exported tokenizer does.

The protobuf is read (and patched, for predict's encoder) without the protobuf package.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from bertcli.errors import UsageError
from bertcli.tokenizer.base import SPECIAL_TOKENS
from bertcli.tokenizer.hf import added_tokens, bert_post_processor

WORD_START = "\u2581"  # SentencePiece's "▁": the piece begins a new word

# --- The SentencePiece model's protobuf, read (and patched) without the protobuf package ---------
# Field numbers from sentencepiece_model.proto. Only what the export needs is read.
MODEL_TRAINER_SPEC, MODEL_NORMALIZER_SPEC = 2, 3
TRAINER_MODEL_TYPE, TRAINER_TREAT_WHITESPACE_AS_SUFFIX, TRAINER_SPLIT_DIGITS, TRAINER_BYTE_FALLBACK = 3, 24, 25, 35
NORMALIZER_NAME, NORMALIZER_CHARSMAP, NORMALIZER_ADD_DUMMY_PREFIX, NORMALIZER_REMOVE_EXTRA_WHITESPACES = 1, 2, 3, 4
NORMALIZATIONS = {"nmt_nfkc": False, "nmt_nfkc_cf": True}  # what `bertcli tokenize` uses → lowercases
SPM_UNIGRAM, SPM_BPE = 1, 2


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fields(buf: bytes) -> list[tuple[int, int | bytes, bytes]]:
    """(field number, value, the field's raw bytes) of each field of a serialized message."""
    fields, i = [], 0
    while i < len(buf):
        start = i
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i:i + size], i + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value, buf[start:i]))
    return fields


def _last(fields, number: int, default):
    values = [value for n, value, _ in fields if n == number]
    return values[-1] if values else default


@dataclass
class SpmSpec:
    model_type: int  # SPM_UNIGRAM or SPM_BPE
    byte_fallback: bool
    normalization: str  # SentencePiece's rule name, e.g. nmt_nfkc
    precompiled_charsmap: bytes
    treat_whitespace_as_suffix: bool
    split_digits: bool
    add_dummy_prefix: bool
    remove_extra_whitespaces: bool


def read_spm_spec(model: bytes) -> SpmSpec:
    top = _fields(model)
    trainer = _fields(_last(top, MODEL_TRAINER_SPEC, b""))
    normalizer = _fields(_last(top, MODEL_NORMALIZER_SPEC, b""))
    return SpmSpec(
        model_type=_last(trainer, TRAINER_MODEL_TYPE, SPM_UNIGRAM),
        byte_fallback=bool(_last(trainer, TRAINER_BYTE_FALLBACK, 0)),
        normalization=_last(normalizer, NORMALIZER_NAME, b"").decode("utf-8", "replace"),
        precompiled_charsmap=_last(normalizer, NORMALIZER_CHARSMAP, b""),
        treat_whitespace_as_suffix=bool(_last(trainer, TRAINER_TREAT_WHITESPACE_AS_SUFFIX, 0)),
        split_digits=bool(_last(trainer, TRAINER_SPLIT_DIGITS, 0)),
        add_dummy_prefix=bool(_last(normalizer, NORMALIZER_ADD_DUMMY_PREFIX, 1)),
        remove_extra_whitespaces=bool(_last(normalizer, NORMALIZER_REMOVE_EXTRA_WHITESPACES, 1)),
    )


def spm_with_normalizer(model: bytes, add_dummy_prefix: bool, remove_extra_whitespaces: bool) -> bytes:
    """The model with two normaliser flags replaced (SentencePiece has no runtime switch for them)."""
    flags = {NORMALIZER_ADD_DUMMY_PREFIX: add_dummy_prefix, NORMALIZER_REMOVE_EXTRA_WHITESPACES: remove_extra_whitespaces}
    top = _fields(model)
    normalizer = b"".join(raw for n, _, raw in _fields(_last(top, MODEL_NORMALIZER_SPEC, b"")) if n not in flags)
    normalizer += b"".join(_encode_varint(n << 3) + _encode_varint(int(v)) for n, v in flags.items())
    spec = _encode_varint(MODEL_NORMALIZER_SPEC << 3 | 2) + _encode_varint(len(normalizer)) + normalizer
    return b"".join(raw for n, _, raw in top if n != MODEL_NORMALIZER_SPEC) + spec


# --- The fast tokenizer ---------------------------------------------------------------------------
# NFKC runs before SentencePiece's map because tokenizers' `Precompiled` looks a whole grapheme up by
# its *shortest* mapped prefix and drops the rest (an "A" + combining accent with a lowercasing map
# becomes "a"); composed first, such graphemes are single characters. Two characters that NFKC or
# lowercasing would change but SentencePiece's map keeps are parked on Unicode noncharacters
# meanwhile: FULLWIDTH TILDE (NFKC makes it "~") and, with --lowercase, the dotted capital I
# (lowercasing splits it in two; NFKC may have just composed it from "I" + U+0307).
FULLWIDTH_TILDE, DOTTED_CAPITAL_I = ("\uff5e", "\ufdd0"), ("\u0130", "\ufdd1")


def _replace(pattern: dict, content: str) -> dict:
    return {"type": "Replace", "pattern": pattern, "content": content}


def _normalizer(spec: SpmSpec) -> dict:
    lowercase = NORMALIZATIONS[spec.normalization]
    def park(char, parked):
        return _replace({"String": char}, parked)

    def unpark(char, parked):
        return _replace({"String": parked}, char)

    steps = [park(*FULLWIDTH_TILDE), {"type": "NFKC"}]
    if lowercase:
        # SentencePiece's case-folding map alone would hit the grapheme problem above on "A" + accent
        steps += [park(*DOTTED_CAPITAL_I), {"type": "Lowercase"}]
    steps.append({"type": "Precompiled", "precompiled_charsmap": base64.b64encode(spec.precompiled_charsmap).decode()})
    steps.append(unpark(*FULLWIDTH_TILDE))
    if lowercase:
        steps.append(unpark(*DOTTED_CAPITAL_I))
    # SentencePiece collapses runs of spaces and drops trailing ones; leading ones become the `▁`
    steps += [_replace({"Regex": " {2,}"}, " "), _replace({"Regex": " +$"}, "")]
    return {"type": "Sequence", "normalizers": steps}


def _bpe_merges(pieces: list[str], scores: list[float], normal: set[int]) -> list[str]:
    """Every (left, right) whose concatenation is a piece, best-scoring result first (SentencePiece's order)."""
    ids = {pieces[i]: i for i in normal}
    ranked = []
    for i in normal:
        piece = pieces[i]
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                ranked.append((-scores[i], i, cut, left, right))
    ranked.sort()
    # "left right" strings, the form every tokenizers version reads (pieces never hold a space: it is `▁`)
    return [f"{left} {right}" for *_, left, right in ranked]


def fast_tokenizer_json(tok) -> dict:
    """A `tokenizers` Tokenizer (as tokenizer.json) that reproduces the SentencePiece model's ids."""
    model_bytes = tok.sp.serialized_model_proto()
    spec = read_spm_spec(model_bytes)
    where = tok.path or "the tokenizer"
    if spec.model_type not in (SPM_UNIGRAM, SPM_BPE) or spec.normalization not in NORMALIZATIONS \
            or not spec.precompiled_charsmap or spec.treat_whitespace_as_suffix or spec.split_digits \
            or not spec.add_dummy_prefix or not spec.remove_extra_whitespaces:
        raise UsageError(f"{where}: this SentencePiece model uses settings `bertcli tokenize` never sets; "
                         "export supports bertcli's BPE and unigram tokenizers only")
    sp = tok.sp
    n = tok.vocab_size
    pieces = [sp.id_to_piece(i) for i in range(n)]
    scores = [sp.get_score(i) for i in range(n)]
    normal = {i for i in range(n) if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))}
    unk = SPECIAL_TOKENS["unk"]
    if spec.model_type == SPM_BPE:
        model = {"type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
                 "end_of_word_suffix": None, "fuse_unk": True,  # SentencePiece merges runs of unknowns into one
                 "byte_fallback": spec.byte_fallback,
                 "vocab": {piece: i for i, piece in enumerate(pieces)},
                 "merges": _bpe_merges(pieces, scores, normal)}
    else:
        # SentencePiece never matches control, unknown or byte pieces in text, but the unigram lattice of
        # tokenizers would (score 0 beats any spelling of "［MASK］"): rank them below every real piece
        floor = min(scores[i] for i in normal) - 1000.0
        model = {"type": "Unigram", "unk_id": tok.unk_id, "byte_fallback": spec.byte_fallback,
                 "vocab": [[piece, scores[i] if i in normal else floor] for i, piece in enumerate(pieces)]}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens(tok),
        "normalizer": _normalizer(spec),
        # "first": only the start of the text gets the `▁` word prefix, so in "[MASK]." the "." stays
        # a continuation as it was in training, and "[MASK] is" still starts a word with "▁is"
        "pre_tokenizer": {"type": "Metaspace", "replacement": WORD_START, "prepend_scheme": "first", "split": True},
        "post_processor": bert_post_processor(tok),
        "decoder": {"type": "Sequence", "decoders": [
            _replace({"String": WORD_START}, " "), {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": model,
    }
