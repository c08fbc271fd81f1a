"""The tokenizer an artifact carries: a data directory's or a checkpoint's `tokenizer/`.

make-data copies its tokenizer into the data directory, and every checkpoint copies the data's
into itself, so eval, export, predict, show-data and dynamic masking read the tokenizer from the
artifact in hand, from any working directory, after it was moved or copied. Each copy is checked
once, here, against the hash the artifact records.
"""

from __future__ import annotations

from pathlib import Path

from bertcli.errors import UsageError
from bertcli.tokenizer import Tokenizer, load, load_artifact_tokenizer


def data_tokenizer(data_dir: Path, manifest: dict) -> Tokenizer:
    """The tokenizer a make-data directory was made with."""
    info = manifest.get("tokenizer") or {}
    return load_artifact_tokenizer(data_dir, info.get("sha256"), f"data directory {data_dir}")


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
    return load_artifact_tokenizer(ckpt, expected, where)

