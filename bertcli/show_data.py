"""`show-data`: look at pretraining instances, decoded, as Google's script logs its first ones."""

from __future__ import annotations

import json
from pathlib import Path

from rich.text import Text

from bertcli.console import console
from bertcli.errors import UsageError
from bertcli.shards import PretrainingData
from bertcli.tokenizer import Tokenizer


def show_data(data_dir: Path, split: str, start: int, count: int, as_json: bool, tokenizer_dir: Path | None) -> None:
    data = PretrainingData([data_dir], split)
    if start < 0 or count < 0:
        raise UsageError("--start and --count must not be negative")
    if start >= len(data) and len(data):
        raise UsageError(f"--start {start} is past the end: the {split} split has {len(data)} instances")
    stop = min(start + count, len(data))
    tok = None
    if not as_json:
        tok = Tokenizer.load(tokenizer_dir or Path(data.manifests[0]["tokenizer"]["path"]))
        if tok.sha256 != data.signature["tokenizer_sha256"]:
            raise UsageError(f"tokenizer {tok.path} is not the one {data_dir} was made with; pass --tokenizer")
    for i in range(start, stop):
        ex = data[i]
        if as_json:
            print(json.dumps({
                "index": i, "input_ids": ex.input_ids.tolist(), "segment_ids": ex.segment_ids().tolist(),
                "masked_positions": ex.masked_positions.tolist(), "masked_ids": ex.masked_ids.tolist(),
                "next_sentence_label": ex.next_sentence_label, "original_ids": ex.original_ids().tolist()}))
            continue
        originals = dict(zip(ex.masked_positions.tolist(), ex.masked_ids.tolist()))
        line = Text(f"#{i} ", style="bold")
        line.append("random next" if ex.next_sentence_label else "actual next", style="magenta")
        line.append("\n")
        for pos, (piece, token_id) in enumerate(zip(tok.pieces(ex.input_ids), ex.input_ids.tolist())):
            if pos == ex.segment_b_start:
                line.append("‖ ", style="dim")
            if pos in originals:
                orig = tok.pieces([originals[pos]])[0]
                shown = piece if originals[pos] == token_id else f"{piece}→{orig}"
                line.append(f"{shown}({orig}) " if originals[pos] == token_id else f"{shown} ", style="bold yellow")
            else:
                line.append(f"{piece} ", style="cyan" if pos >= ex.segment_b_start else None)
        console.print(line)
