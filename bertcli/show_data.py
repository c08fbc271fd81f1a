"""`show-data`: look at pretraining instances, decoded, as Google's script logs its first ones.

Human output goes to stderr through the shared console (rich); `--json` writes one object per
instance to stdout for scripts. This module only reads a data directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.text import Text

from bertcli.console import console
from bertcli.errors import UsageError
from bertcli.shards import Example, PretrainingData
from bertcli.artifacts import data_tokenizer
from bertcli.tokenizer import Tokenizer


def show_data(data_dir: Path, split: str, start: int, count: int, as_json: bool, tokenizer_dir: Path | None) -> None:
    if start < 0 or count < 0:
        raise UsageError("--start and --count must not be negative")
    data = PretrainingData([data_dir], split)
    if start >= len(data) and len(data):
        raise UsageError(f"--start {start} is past the end: the {split} split of {data_dir} has {len(data)} instances")
    stop = min(start + count, len(data))
    if as_json:
        for i in range(start, stop):
            print(json.dumps(example_json(i, data[i])))
        return
    tok = _tokenizer(data, data_dir, tokenizer_dir)
    if stop == start:
        console.print(f"the {split} split of {data_dir} has no instances")
    for i in range(start, stop):
        console.print(render(i, data[i], tok, data.objective.label_names))


def example_json(index: int, ex: Example) -> dict:
    return {"index": index, "input_ids": ex.input_ids.tolist(), "segment_ids": ex.segment_ids().tolist(),
            "masked_positions": ex.masked_positions.tolist(), "masked_ids": ex.masked_ids.tolist(),
            "next_sentence_label": ex.next_sentence_label, "original_ids": ex.original_ids().tolist()}


def _tokenizer(data: PretrainingData, data_dir: Path, tokenizer_dir: Path | None) -> Tokenizer:
    """--tokenizer if given, else the one the data directory carries (or, older data, names)."""
    if tokenizer_dir is None:
        return data_tokenizer(data_dir, data.manifests[0])
    tok = Tokenizer.load(tokenizer_dir)
    if tok.sha256 != data.signature["tokenizer_sha256"]:
        raise UsageError(f"tokenizer {tokenizer_dir} is not the one {data_dir} was made with; pass the matching --tokenizer")
    return tok


def render(index: int, ex: Example, tok: Tokenizer,
           label_names: tuple[str, str] | None = ("actual next", "random next")) -> Text:
    """One instance as pieces: segment B in cyan after "‖", a masked position as shown⟨original⟩.

    `label_names` say what labels 0 and 1 mean for the data's objective (None: mlm, no label).
    """
    originals = dict(zip(ex.masked_positions.tolist(), ex.masked_ids.tolist()))
    line = Text(f"#{index} ", style="bold")
    line.append(label_names[ex.next_sentence_label] if label_names else "packed", style="magenta")
    line.append(f"  {len(ex.input_ids)} tokens, {len(originals)} masked\n", style="dim")
    for pos, piece in enumerate(tok.pieces(ex.input_ids)):
        if pos == ex.segment_b_start:
            line.append("‖ ", style="dim")
        if pos in originals:
            line.append(f"{piece}⟨{tok.pieces([originals[pos]])[0]}⟩ ", style="bold yellow")
        else:
            line.append(f"{piece} ", style="cyan" if pos >= ex.segment_b_start else None)
    return line
