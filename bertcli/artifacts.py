"""The tokenizer an artifact carries: a data directory's or a checkpoint's `tokenizer/`.

make-data copies its tokenizer into the data directory, and every checkpoint copies the data's
into itself, so eval, export, predict, show-data and dynamic masking read the tokenizer from the
artifact in hand, from any working directory, after it was moved or copied. Each copy is checked
once, here, against the hash the artifact records.

Artifacts written before this (data format_version 1, checkpoint format_version 1) do not carry
one: a data directory falls back to the tokenizer path in its manifest, a checkpoint to its run
config's data.dir. Those fallbacks exist for old artifacts only.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from bertcli.errors import DataError, UsageError
from bertcli.tokenizer import ARTIFACT_DIR, Tokenizer, load, load_artifact_tokenizer


def data_tokenizer(data_dir: Path, manifest: dict) -> Tokenizer:
    """The tokenizer a make-data directory was made with."""
    info = manifest.get("tokenizer") or {}
    legacy = Path(info["path"]) if "dir" not in info and isinstance(info.get("path"), str) else None
    return load_artifact_tokenizer(data_dir, info.get("sha256"), legacy, f"data directory {data_dir}")


def checkpoint_tokenizer(ckpt: Path, state: dict, tokenizer_dir: Path | None = None) -> Tokenizer:
    """The tokenizer a checkpoint was trained with: --tokenizer if given, else the one it carries."""
    expected = (state.get("data_signature") or {}).get("tokenizer_sha256")
    where = f"checkpoint {ckpt}"
    if tokenizer_dir is not None:
        tok = load(tokenizer_dir)
        if expected and tok.sha256 != expected:
            raise UsageError(f"--tokenizer {tokenizer_dir} is not the tokenizer {where} was trained with "
                             f"(sha256 {tok.sha256[:12]}… vs {expected[:12]}…); give the tokenizer its data was made with")
        return tok
    if (ckpt / ARTIFACT_DIR).is_dir():
        return load_artifact_tokenizer(ckpt, expected, None, where)
    return _legacy_checkpoint_tokenizer(ckpt, expected)


def _legacy_checkpoint_tokenizer(ckpt: Path, expected: str | None) -> Tokenizer:
    """A checkpoint from before tokenizers travelled with it: through its config's data.dir."""
    from bertcli.checkpoint import CONFIG_FILE
    from bertcli.shards import load_manifest

    hint = "pass --tokenizer DIR (the tokenizer the training data was made with)"
    try:
        config = yaml.safe_load((ckpt / CONFIG_FILE).read_text(encoding="utf-8"))
        data_dir = config["data"]["dir"]
        data_dir = Path(data_dir[0] if isinstance(data_dir, list) else data_dir)
    except (OSError, yaml.YAMLError, UnicodeDecodeError, KeyError, TypeError, IndexError):
        raise UsageError(f"checkpoint {ckpt} does not carry its tokenizer and its {CONFIG_FILE} names no data.dir; {hint}") from None
    try:
        tok = data_tokenizer(data_dir, load_manifest(data_dir))
    except (UsageError, DataError) as e:
        raise UsageError(f"checkpoint {ckpt} does not carry its tokenizer, and through its data directory {data_dir}: "
                         f"{e}; {hint}") from None
    if expected and tok.sha256 != expected:
        raise UsageError(f"the tokenizer of {data_dir} is not the one checkpoint {ckpt} was trained with; {hint}")
    return tok
