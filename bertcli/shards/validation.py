"""Validation of a data directory: the manifest's schema and a shard's arrays, before either is used.

Every file bertcli reads may be crafted. A checksum only proves a shard is the one the manifest
lists; these checks are what stands between crafted data and an out-of-range index in numpy or
torch. Every problem is one line naming the file, the field and the fix.
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePath

import numpy as np

from bertcli.errors import DataError, UsageError
from bertcli.fsutil import read_json
from bertcli.limits import MAX_COUNT, MAX_SEQ_LENGTH, SHA256, is_int
from bertcli.objectives import manifest_objective
from bertcli.shards.format import FORMAT, MANIFEST, MANIFEST_VERSION, SPLITS, Examples, token_dtype


def check_examples(ex: Examples, path: Path, vocab_size: int, max_seq_length: int, max_predictions: int,
                   paired: bool = True) -> None:
    """Refuse a shard whose arrays do not describe valid instances; vectorised, once per shard.

    A checksum only proves the file is the one the manifest lists, not that either is sound:
    this is what stands between crafted data and an out-of-range index in numpy or torch.
    """
    def bad(field: str, problem: str) -> DataError:
        return DataError(f"{path}: array {field} {problem}; the shard is damaged or was not made by "
                         "`bertcli make-data`, rebuild the data")

    token = np.dtype(token_dtype(vocab_size)).newbyteorder("<")
    expected = {"input_ids": token, "masked_ids": token, "offsets": np.int64, "masked_offsets": np.int64,
                "segment_b_start": np.int32, "next_sentence_labels": np.uint8, "fallback": np.uint8,
                "masked_positions": np.int32}
    for name, dtype in expected.items():
        got = getattr(ex, name).dtype
        if got != np.dtype(dtype).newbyteorder("<"):
            raise bad(name, f"has dtype {got}, expected {np.dtype(dtype)}")
    n = len(ex.offsets) - 1
    if n < 0:
        raise bad("offsets", "is empty (it has one entry more than there are instances)")
    for name in ("segment_b_start", "next_sentence_labels", "fallback"):
        if len(getattr(ex, name)) != n:
            raise bad(name, f"has {len(getattr(ex, name))} entries for {n} instances")
    if len(ex.masked_offsets) != n + 1:
        raise bad("masked_offsets", f"has {len(ex.masked_offsets)} entries, expected {n + 1}")
    if len(ex.masked_ids) != len(ex.masked_positions):
        raise bad("masked_ids", f"has {len(ex.masked_ids)} entries for {len(ex.masked_positions)} masked positions")

    offsets = np.asarray(ex.offsets)
    lengths = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != len(ex.input_ids):
        raise bad("offsets", f"runs from {offsets[0]} to {offsets[-1]}, expected 0 to {len(ex.input_ids)}")
    if n and (lengths.min() < 2 or lengths.max() > max_seq_length):
        raise bad("offsets", f"gives an instance of {lengths.min() if lengths.min() < 2 else lengths.max()} tokens; "
                  f"instances have 2 to max_seq_length ({max_seq_length}) tokens (offsets must increase)")
    for name in ("input_ids", "masked_ids"):
        ids = np.asarray(getattr(ex, name))
        if len(ids) and (int(ids.max()) >= vocab_size or int(ids.min()) < 0):
            raise bad(name, f"holds token id {int(ids.max()) if int(ids.max()) >= vocab_size else int(ids.min())}, "
                      f"outside the vocabulary of {vocab_size}")
    segment_b_start = np.asarray(ex.segment_b_start, dtype=np.int64)
    # Pairs (nsp, sop) have a non-empty B after A; mlm's packed sequences have none: B starts at the end.
    wrong = ((segment_b_start < 1) | (segment_b_start >= lengths)) if paired else (segment_b_start != lengths)
    if n and wrong.any():
        k = int(np.flatnonzero(wrong)[0])
        raise bad("segment_b_start", f"is {segment_b_start[k]} for instance {k} of {lengths[k]} tokens"
                  + ("" if paired else " (mlm data has no segment B: it must equal the length)"))
    for name in ("next_sentence_labels", "fallback"):
        if n and int(np.asarray(getattr(ex, name)).max()) > 1:
            raise bad(name, "holds a value other than 0 and 1")

    masked_offsets = np.asarray(ex.masked_offsets)
    counts = np.diff(masked_offsets)
    if masked_offsets[0] != 0 or masked_offsets[-1] != len(ex.masked_positions):
        raise bad("masked_offsets", f"runs from {masked_offsets[0]} to {masked_offsets[-1]}, "
                  f"expected 0 to {len(ex.masked_positions)}")
    if n and (counts.min() < 0 or counts.max() > max_predictions):
        raise bad("masked_offsets", f"gives an instance {counts.min() if counts.min() < 0 else counts.max()} masked "
                  f"positions; instances have 0 to max_predictions ({max_predictions}) (offsets must not decrease)")
    positions = np.asarray(ex.masked_positions, dtype=np.int64)
    owner = np.repeat(np.arange(n), counts)  # the instance of each masked position
    if len(positions) and ((positions < 0) | (positions >= lengths[owner])).any():
        k = int(np.flatnonzero((positions < 0) | (positions >= lengths[owner]))[0])
        raise bad("masked_positions", f"holds position {positions[k]} in instance {owner[k]} of {lengths[owner[k]]} tokens")
    if len(positions) > 1 and (np.diff(positions)[owner[1:] == owner[:-1]] <= 0).any():
        raise bad("masked_positions", "is not strictly ascending within an instance")


MAX_MANIFEST_BYTES = 1 << 28  # a billion instances in shards of 100,000 is a few MB of manifest
MAX_VOCAB_SIZE = 1 << 20  # four times the largest vocabulary of a published BERT-like model
SPECIAL_NAMES = ("pad", "unk", "cls", "sep", "mask")


def load_manifest(data_dir: Path) -> dict:
    """Read and validate a data directory's manifest; every problem is one line naming the field."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UsageError(f"data directory {data_dir} does not exist; make it with `bertcli make-data`")
    path = data_dir / MANIFEST
    if not path.is_file():
        hint = "an interrupted make-data: finish it with --resume" if (data_dir / "progress.json").is_file() \
            else "make it with `bertcli make-data`"
        raise UsageError(f"{data_dir} is not a make-data output (no {MANIFEST}); {hint}")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise DataError(f"{path}: {path.stat().st_size:,} bytes is too large for a data manifest; rebuild the data")
    try:
        manifest = read_json(path, "data manifest")
    except RecursionError:
        raise DataError(f"{path}: data manifest is nested too deeply; rebuild the data") from None
    if manifest.get("format") != FORMAT:
        raise UsageError(f"{path} is not a bertcli data manifest; make the data with `bertcli make-data`")
    if manifest.get("format_version") != MANIFEST_VERSION:
        raise UsageError(f"{path} has format_version {str(manifest.get('format_version'))[:20]}, this bertcli reads "
                         f"{MANIFEST_VERSION}; rebuild the data with `bertcli make-data`")
    ManifestCheck(path, data_dir).check(manifest)
    manifest_objective(manifest, path)
    return manifest


class ManifestCheck:
    """The manifest's schema: types, ranges, counts that add up, shard files inside the directory."""

    def __init__(self, path: Path, data_dir: Path):
        self.path, self.data_dir = path, data_dir

    def fail(self, field: str, problem: str) -> DataError:
        return DataError(f"{self.path}: {field} {problem}; the manifest was damaged or edited, "
                         "rebuild the data with `bertcli make-data`")

    def get(self, obj: dict, key: str, where: str, kind, low=None, high=None, required: bool = True):
        """obj[key] checked to be of `kind` (dict, list, str, int, float, bool) and within [low, high]."""
        field = f"{where}.{key}" if where else key
        if key not in obj:
            if required:
                raise self.fail(field, "is missing")
            return None
        value = obj[key]
        ok = {int: is_int(value), float: (is_int(value) or isinstance(value, float)) and math.isfinite(value),
              bool: isinstance(value, bool)}.get(kind, isinstance(value, kind))
        if not ok:
            raise self.fail(field, f"is {_show(value)}, not {KIND_NAMES[kind]}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(field, f"is {_show(value)}, outside [{low}, {high}]")
        return value

    def check(self, m: dict) -> None:
        tok = self.get(m, "tokenizer", "", dict)
        vocab_size = self.get(tok, "vocab_size", "tokenizer", int, 6, MAX_VOCAB_SIZE)
        if not SHA256.fullmatch(self.get(tok, "sha256", "tokenizer", str)):
            raise self.fail("tokenizer.sha256", "is not a sha256 (64 hex digits)")
        self.get(tok, "path", "tokenizer", str, required=False)  # where it came from, for people
        self.get(tok, "dir", "tokenizer", str)  # the directory carries it (artifacts.py checks it)
        self.get(tok, "kind", "tokenizer", str, required=False)
        special = self.get(tok, "special_ids", "tokenizer", dict)
        for name in SPECIAL_NAMES:
            self.get(special, name, "tokenizer.special_ids", int, 0, vocab_size - 1)
        if m.get("token_dtype", np.dtype(token_dtype(vocab_size)).name) != np.dtype(token_dtype(vocab_size)).name:
            raise self.fail("token_dtype", f"is {_show(m['token_dtype'])}, but a vocabulary of {vocab_size} is stored as "
                            f"{np.dtype(token_dtype(vocab_size)).name}")

        opts = self.get(m, "options", "", dict)
        max_seq_length = self.get(opts, "max_seq_length", "options", int, 8, MAX_SEQ_LENGTH)
        self.get(opts, "max_predictions", "options", int, 1, max_seq_length - 3)
        self.get(opts, "masked_lm_prob", "options", float, 1e-9, 1 - 1e-9)
        self.get(opts, "whole_word_mask", "options", bool)
        self.get(opts, "objective", "options", str, required=False)  # absent: nsp (see bertcli/objectives/)
        if opts.get("short_seq_prob") is not None:  # null for mlm, which has no short sequences
            self.get(opts, "short_seq_prob", "options", float, 0, 1, required=False)
        self.get(opts, "mask_replace_prob", "options", float, 0, 1, required=False)
        self.get(opts, "random_replace_prob", "options", float, 0, 1, required=False)
        self.get(opts, "cross_document", "options", bool, required=False)
        self.get(opts, "validation_fraction", "options", float, 0, 1, required=False)
        self.get(opts, "dupe_factor", "options", int, 1, MAX_COUNT, required=False)
        self.get(opts, "seed", "options", int, required=False)

        splits = self.get(m, "splits", "", dict)
        seen: set[str] = set()
        for split in SPLITS:
            self.check_split(self.get(splits, split, "splits", dict), f"splits.{split}", max_seq_length, seen)

    def check_split(self, info: dict, where: str, max_seq_length: int, seen: set[str]) -> None:
        instances = self.get(info, "instances", where, int, 0, MAX_COUNT)
        tokens = self.get(info, "tokens", where, int, 0, MAX_COUNT)
        self.get(info, "masked_tokens", where, int, 0, tokens)
        self.get(info, "documents", where, int, 0, MAX_COUNT)
        self.get(info, "sentences", where, int, 0, MAX_COUNT)
        stats = self.get(info, "stats", where, dict)
        for key, value in stats.items():
            self.get(stats, key, f"{where}.stats", float)
        shards = self.get(info, "shards", where, list)
        total_instances = total_tokens = 0
        for k, shard in enumerate(shards):
            at = f"{where}.shards[{k}]"
            if not isinstance(shard, dict):
                raise self.fail(at, f"is {_show(shard)}, not an object")
            self.check_file(self.get(shard, "file", at, str), f"{at}.file", seen)
            if not SHA256.fullmatch(self.get(shard, "sha256", at, str)):
                raise self.fail(f"{at}.sha256", "is not a sha256 (64 hex digits); every shard needs its checksum")
            n = self.get(shard, "instances", at, int, 0, MAX_COUNT)
            total_instances += n
            total_tokens += self.get(shard, "tokens", at, int, 2 * n, max_seq_length * n)
        if total_instances != instances:
            raise self.fail(f"{where}.instances", f"is {instances}, but its shards hold {total_instances}")
        if total_tokens != tokens:
            raise self.fail(f"{where}.tokens", f"is {tokens}, but its shards hold {total_tokens}")

    def check_file(self, name: str, field: str, seen: set[str]) -> None:
        """A shard's path: relative, without `..`, and still inside the data directory after symlinks."""
        relative = PurePath(name)
        if not name or "\x00" in name or relative.is_absolute() or relative.anchor or ".." in relative.parts:
            raise self.fail(field, f"is {_show(name)}; shard paths are relative to the data directory, without '..'")
        root = self.data_dir.resolve()
        try:
            inside = (root / relative).resolve().is_relative_to(root)
        except (OSError, RuntimeError):  # a name too long, a symlink loop
            inside = False
        if not inside:
            raise self.fail(field, f"is {_show(name)}, which leads outside the data directory (a symlink)")
        if name in seen:
            raise self.fail(field, f"is {_show(name)}, listed twice")
        seen.add(name)


KIND_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a finite number",
              bool: "true or false"}


def _show(value) -> str:
    """A value for an error message, cut short: the line must stay one line of sane length."""
    if isinstance(value, (dict, list)):
        return f"{KIND_NAMES[type(value)]} of {len(value)} entries"
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
