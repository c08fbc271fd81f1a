"""Export a checkpoint as a Hugging Face model directory that transformers loads with no extra code.

`bertcli export` writes, atomically (a temporary directory renamed into place):

    config.json             BertConfig fields, `"architectures": ["BertForPreTraining"]` (nsp and sop:
                            both train the same two-way head) or `["BertForMaskedLM"]` (mlm)
    model.safetensors       the checkpoint's weights: bertcli's keys already are HF's (the decoder is
                            tied to the word embeddings and not stored), float32 or bfloat16; an mlm
                            model has no pooler and no two-way head, exactly BertForMaskedLM's keys
    tokenizer.json          a `tokenizers` fast tokenizer that gives SentencePiece's ids
    tokenizer_config.json   tokenizer_class PreTrainedTokenizerFast, the special tokens
    special_tokens_map.json for transformers versions that still read it
    spm.model               the SentencePiece model itself, for tools that want it
    bertcli_export.json     where it came from: checkpoint, step, tokenizer sha256, bertcli version

The tokenizer is rebuilt from the SentencePiece model's own parts (vocabulary, scores and the
precompiled normalisation map, read from its protobuf): BPE merges ranked by the score of the
merged piece (SentencePiece merges the best-scoring adjacent pair first), or the unigram scores;
NFKC + SentencePiece's map for normalisation; runs of spaces collapsed and trailing spaces dropped;
Metaspace `▁` splitting. As in every Hugging Face tokenizer, the special tokens written in text
(`[MASK]`, `[SEP]`, …) are those tokens; bertcli's own tokenizer reads them as plain text, which is
what pretraining data wants. `bertcli predict` reads them as the exported tokenizer does.

Reading an exported (or any HF BERT) directory back is weights.py's job (`train.init_from`).
Not done here: TensorFlow or ONNX formats, uploading to the Hub, other tokenizer families.
"""

from __future__ import annotations

import base64
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from bertcli import __version__
from bertcli.checkpoint import CONFIG_FILE, load_weights, read_state, resolve_checkpoint
from bertcli.errors import DataError, UsageError
from bertcli.fsutil import TMP_PREFIX, prepare_out_dir, replace_dir, write_bytes_atomic, write_json_atomic
from bertcli.objectives import checkpoint_objective
from bertcli.shards import load_manifest
from bertcli.tokenizer import MODEL_FILE, SPECIAL_IDS, SPECIAL_TOKENS, WORD_START, Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
PROVENANCE_FILE = "bertcli_export.json"


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


def fast_tokenizer_json(tok: Tokenizer) -> dict:
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
        model = {"type": "Unigram", "unk_id": SPECIAL_IDS["unk"], "byte_fallback": spec.byte_fallback,
                 "vocab": [[piece, scores[i] if i in normal else floor] for i, piece in enumerate(pieces)]}
    specials = sorted(SPECIAL_IDS, key=SPECIAL_IDS.get)
    cls, sep = SPECIAL_TOKENS["cls"], SPECIAL_TOKENS["sep"]

    def special(name: str, type_id: int) -> dict:
        return {"SpecialToken": {"id": name, "type_id": type_id}}

    def sequence(name: str, type_id: int) -> dict:
        return {"Sequence": {"id": name, "type_id": type_id}}

    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": SPECIAL_IDS[k], "content": SPECIAL_TOKENS[k], "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True} for k in specials],
        "normalizer": _normalizer(spec),
        # "first": only the start of the text gets the `▁` word prefix, so in "[MASK]." the "." stays
        # a continuation as it was in training, and "[MASK] is" still starts a word with "▁is"
        "pre_tokenizer": {"type": "Metaspace", "replacement": WORD_START, "prepend_scheme": "first", "split": True},
        # [CLS] A [SEP] (B [SEP]) with token types 0 for A and 1 for B, as in pretraining
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special(cls, 0), sequence("A", 0), special(sep, 0)],
            "pair": [special(cls, 0), sequence("A", 0), special(sep, 0), sequence("B", 1), special(sep, 1)],
            "special_tokens": {t: {"id": t, "ids": [tok.special_ids[k]], "tokens": [t]}
                               for k, t in (("cls", cls), ("sep", sep))},
        },
        "decoder": {"type": "Sequence", "decoders": [
            _replace({"String": WORD_START}, " "), {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": model,
    }


def tokenizer_config(max_length: int) -> tuple[dict, dict]:
    """tokenizer_config.json and special_tokens_map.json."""
    special_map = {f"{k}_token": SPECIAL_TOKENS[k] for k in ("unk", "sep", "pad", "cls", "mask")}
    added = {str(SPECIAL_IDS[k]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                   "single_word": False, "special": True} for k, t in SPECIAL_TOKENS.items()}
    config = {
        # the generic class: BertTokenizer(Fast) would rebuild a WordPiece pipeline from a vocab file
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "padding_side": "right",
        "truncation_side": "right",
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": added,
        **special_map,
    }
    return config, special_map


def write_tokenizer_files(directory: Path, tok: Tokenizer, max_length: int, tokenizer_json: dict | None = None) -> None:
    """tokenizer.json, tokenizer_config.json, special_tokens_map.json and the SentencePiece model."""
    write_json_atomic(directory / "tokenizer.json", tokenizer_json or fast_tokenizer_json(tok))
    config, special_map = tokenizer_config(max_length)
    write_json_atomic(directory / "tokenizer_config.json", config)
    write_json_atomic(directory / "special_tokens_map.json", special_map)
    write_bytes_atomic(directory / MODEL_FILE, tok.sp.serialized_model_proto())


def hf_config(model_config: dict, dtype: str, sentence_task: bool = True) -> dict:
    """config.json for transformers' BertConfig, from the checkpoint's model config."""
    return {
        "architectures": ["BertForPreTraining" if sentence_task else "BertForMaskedLM"],
        "model_type": "bert",
        **model_config,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "dtype": dtype,
        "torch_dtype": dtype,  # the name transformers < 4.56 reads
    }


# --- Which tokenizer a checkpoint was trained with ------------------------------------------------

def checkpoint_tokenizer(ckpt: Path, state: dict, tokenizer_dir: Path | None) -> Tokenizer:
    """The tokenizer given by --tokenizer, or found via the run's config.yaml → data.dir → manifest.

    Either way it must be the one the checkpoint's data was made with (same sha256).
    """
    expected = state.get("data_signature", {}).get("tokenizer_sha256")
    if tokenizer_dir is not None:
        tok = Tokenizer.load(tokenizer_dir)
        if expected and tok.sha256 != expected:
            raise UsageError(f"--tokenizer {tokenizer_dir} is not the tokenizer checkpoint {ckpt} was trained with "
                             f"(sha256 {tok.sha256[:12]}… vs {expected[:12]}…); give the tokenizer its data was made with")
        return tok
    hint = "pass --tokenizer DIR (the tokenizer the training data was made with)"
    try:
        config = yaml.safe_load((ckpt / CONFIG_FILE).read_text(encoding="utf-8"))
        data_dir = config["data"]["dir"]
        data_dir = Path(data_dir[0] if isinstance(data_dir, list) else data_dir)
    except (OSError, yaml.YAMLError, UnicodeDecodeError, KeyError, TypeError, IndexError):
        raise UsageError(f"cannot read data.dir from {ckpt / CONFIG_FILE}; {hint}") from None
    try:
        manifest = load_manifest(data_dir)
        tok = Tokenizer.load(Path(manifest["tokenizer"]["path"]))
    except (UsageError, DataError, KeyError, TypeError) as e:
        raise UsageError(f"cannot find the tokenizer of checkpoint {ckpt} through its data directory {data_dir} "
                         f"({e}); {hint}") from None
    if expected and tok.sha256 != expected:
        raise UsageError(f"the tokenizer at {tok.path} (from {data_dir}) changed since checkpoint {ckpt} was trained; {hint}")
    return tok


# --- bertcli export -------------------------------------------------------------------------------

def _refuse_out_dir_holding(out: Path, inputs: list[Path]) -> None:
    """--overwrite replaces --out: never let that delete the checkpoint or tokenizer being exported."""
    target = out.resolve()
    for path in inputs:
        path = path.resolve()
        if path == target or target in path.parents:
            raise UsageError(f"--out {out} holds {path}, which is being exported; choose another directory")


def _readable_by_all(path: Path) -> None:
    """safetensors writes its file owner-only (0600); give it the permissions of the other files."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def export(checkpoint: Path, out: Path, tokenizer_dir: Path | None = None, dtype: str = "float32",
           overwrite: bool = False) -> dict:
    """Write a Hugging Face model directory; return a summary of what was written."""
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    ckpt = resolve_checkpoint(checkpoint)
    state = read_state(ckpt)
    tok = checkpoint_tokenizer(ckpt, state, tokenizer_dir)
    model_config = state["model_config"]
    if tok.vocab_size != model_config.get("vocab_size"):
        raise UsageError(f"tokenizer {tok.path} has {tok.vocab_size} pieces but checkpoint {ckpt} has vocab_size "
                         f"{model_config.get('vocab_size')}; give the tokenizer the model was trained with")
    tokenizer_json = fast_tokenizer_json(tok)
    out = Path(out)
    _refuse_out_dir_holding(out, [ckpt, *([tok.path] if tok.path else [])])
    prepare_out_dir(out, overwrite, "export")
    weights = {k: v.to(DTYPES[dtype]).contiguous() for k, v in load_weights(ckpt, state).items()}

    final = out.resolve()
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _readable_by_all(tmp / "model.safetensors")
        objective = checkpoint_objective(state, ckpt)
        write_json_atomic(tmp / "config.json", hf_config(model_config, dtype, objective.has_sentence_task))
        write_tokenizer_files(tmp, tok, int(model_config["max_position_embeddings"]), tokenizer_json)
        provenance = {"bertcli_version": __version__, "checkpoint": str(ckpt), "step": state["step"],
                      "tokens_seen": state.get("tokens_seen"), "dtype": dtype, "tokenizer_sha256": tok.sha256,
                      "data_signature": state.get("data_signature"), "objective": objective.name}
        write_json_atomic(tmp / PROVENANCE_FILE, provenance)
        replace_dir(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot write --out {out}: {e.strerror or e}; free some space or choose another directory") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(out), "checkpoint": str(ckpt), "step": state["step"], "dtype": dtype,
            "parameters": sum(v.numel() for v in weights.values()), "vocab_size": tok.vocab_size,
            "bytes": sum(f.stat().st_size for f in final.iterdir())}
