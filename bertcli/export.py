"""Export a checkpoint as a Hugging Face model directory that transformers loads with no extra code.

`bertcli export` writes, atomically (a temporary directory renamed into place):

    config.json             BertConfig fields, `"architectures": ["BertForPreTraining"]` (nsp and sop:
                            both train the same two-way head) or `["BertForMaskedLM"]` (mlm); a
                            modernbert checkpoint: ModernBertConfig fields, `["ModernBertForMaskedLM"]`,
                            and a tokenizer_config.json without token_type_ids among the inputs
    model.safetensors       the checkpoint's weights: bertcli's keys already are HF's (the decoder is
                            tied to the word embeddings and not stored), float32 or bfloat16; an mlm
                            model has no pooler and no two-way head, exactly BertForMaskedLM's keys
    tokenizer.json          a `tokenizers` fast tokenizer that gives the bertcli tokenizer's ids
    tokenizer_config.json   the special tokens (at the tokenizer's own ids) and the tokenizer class
    special_tokens_map.json for transformers versions that still read it
    spm.model | vocab.txt   SentencePiece: the model, for tools that want it (tokenizer class
                            PreTrainedTokenizerFast, see tokenizer/sentencepiece_hf.py);
                            WordPiece: BERT's vocab.txt (tokenizer class BertTokenizer), so a
                            published BERT continued with bertcli gives the published model's ids
    tokenizer/              the bertcli tokenizer itself (what `train.init_from` of the export checks)
    bertcli_export.json     where it came from: checkpoint, step, tokenizer sha256, bertcli version

The Hugging Face files come from the tokenizer (`Tokenizer.hf_files`); the checkpoint's tokenizer
is the copy it carries (artifacts.py).

Reading an exported (or any HF BERT) directory back is weights.py's job (`train.init_from`).
Not done here: TensorFlow or ONNX formats, uploading to the Hub, other tokenizer families.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from bertcli import __version__
from bertcli.artifacts import checkpoint_tokenizer
from bertcli.checkpoint import load_weights, read_state, resolve_checkpoint
from bertcli.errors import DataError, UsageError
from bertcli.fsutil import check_output_dir, output_dir, write_bytes_atomic, write_json_atomic
from bertcli.objectives import checkpoint_objective
from bertcli.tokenizer import ARTIFACT_DIR, Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
PROVENANCE_FILE = "bertcli_export.json"
KEEP = ("README.md",)  # a model card the user wrote into an export survives --overwrite (Hugging Face convention)


def write_tokenizer_files(directory: Path, tok: Tokenizer, max_length: int, files: dict | None = None) -> None:
    """The Hugging Face tokenizer files, and the bertcli tokenizer in tokenizer/."""
    for name, data in (files or tok.hf_files(max_length)).items():
        write_bytes_atomic(directory / name, data)
    tok.save(directory / ARTIFACT_DIR)


def hf_config(model_config: dict, dtype: str, pad_token_id: int = 0, sentence_task: bool = True) -> dict:
    """config.json for transformers' BertConfig, from the checkpoint's model config."""
    return {
        "architectures": ["BertForPreTraining" if sentence_task else "BertForMaskedLM"],
        "model_type": "bert",
        **model_config,
        "pad_token_id": pad_token_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "dtype": dtype,
        "torch_dtype": dtype,  # the name transformers < 4.56 reads
    }


def modernbert_hf_config(model_config: dict, dtype: str, tok: Tokenizer) -> dict:
    """config.json for transformers' ModernBertConfig: bertcli's fields are its names; the layer
    pattern and rope bases are written both as transformers >= 5 reads them (layer_types,
    rope_parameters) and as 4.48-4.57 do (global_attn_every_n_layers, *_rope_theta)."""
    from bertcli.modernbert import ModernBertConfig

    values = {k: v for k, v in model_config.items() if k != "architecture"}
    layer_types = ModernBertConfig(**values).resolved_layer_types()
    rope = {"full_attention": {"rope_type": "default", "rope_theta": values["global_rope_theta"]},
            "sliding_attention": {"rope_type": "default", "rope_theta": values["local_rope_theta"]}}
    return {
        "architectures": ["ModernBertForMaskedLM"],
        "model_type": "modernbert",
        **values,
        "layer_types": layer_types,
        "rope_parameters": rope,
        "pad_token_id": tok.pad_id, "cls_token_id": tok.cls_id, "sep_token_id": tok.sep_id,
        "bos_token_id": tok.cls_id, "eos_token_id": tok.sep_id,
        "classifier_pooling": "cls", "classifier_dropout": 0.0, "sparse_prediction": False,
        "tie_word_embeddings": True,
        "dtype": dtype,
        "torch_dtype": dtype,
    }


def without_token_types(files: dict[str, bytes]) -> dict[str, bytes]:
    """The tokenizer files with token_type_ids left out of the model's inputs (ModernBERT takes none)."""
    config = json.loads(files["tokenizer_config.json"])
    config["model_input_names"] = ["input_ids", "attention_mask"]
    return {**files, "tokenizer_config.json": (json.dumps(config, indent=2) + "\n").encode()}


# --- bertcli export -------------------------------------------------------------------------------

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
    modern = model_config.get("architecture") == "modernbert"
    tokenizer_files = tok.hf_files(int(model_config["max_position_embeddings"]))
    if modern:
        tokenizer_files = without_token_types(tokenizer_files)
    out = Path(out)
    # --overwrite replaces --out: never let that delete the checkpoint or tokenizer being exported.
    inputs = [ckpt, *([tok.path] if tok.path else [])]
    check_output_dir(out, "export", overwrite=overwrite, inputs=inputs, keep=KEEP)
    weights = {k: v.to(DTYPES[dtype]).contiguous() for k, v in load_weights(ckpt, state).items()}
    final = Path(os.path.abspath(out))
    try:
        with output_dir(out, "export", overwrite=overwrite, inputs=inputs, keep=KEEP) as tmp:
            save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            _readable_by_all(tmp / "model.safetensors")
            objective = checkpoint_objective(state, ckpt)
            write_json_atomic(tmp / "config.json", modernbert_hf_config(model_config, dtype, tok) if modern else
                              hf_config(model_config, dtype, tok.pad_id, objective.has_sentence_task))
            write_tokenizer_files(tmp, tok, int(model_config["max_position_embeddings"]), tokenizer_files)
            provenance = {"bertcli_version": __version__, "checkpoint": str(ckpt), "step": state["step"],
                          "tokens_seen": state.get("tokens_seen"), "dtype": dtype, "tokenizer_sha256": tok.sha256,
                          "data_signature": state.get("data_signature"), "objective": objective.name}
            write_json_atomic(tmp / PROVENANCE_FILE, provenance)
    except OSError as e:
        raise DataError(f"cannot write --out {out}: {e.strerror or e}; free some space or choose another directory") from None
    return {"out": str(out), "checkpoint": str(ckpt), "step": state["step"], "dtype": dtype,
            "parameters": sum(v.numel() for v in weights.values()), "vocab_size": tok.vocab_size,
            "bytes": sum(f.stat().st_size for f in final.rglob("*") if f.is_file())}
