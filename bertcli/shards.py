"""The on-disk format of pretraining examples: shards plus a manifest, and their reader.

A data directory (what `make-data` writes, what `pretrain` and `eval` read):

    DIR/manifest.json              versioned; tokenizer hash, options, shard list with sha256, stats
    DIR/train/shard-00000.safetensors
    DIR/validation/shard-00000.safetensors

A shard is a safetensors file (no pickle, memory-mappable) of ragged arrays, no padding:

    input_ids           [tokens]   uint16 (int32 if the vocab exceeds 65536): masks applied
    offsets             [n+1]      int64: instance i is input_ids[offsets[i]:offsets[i+1]]
    segment_b_start     [n]        int32: position of B's first token (segment id 1 from here);
                                   the instance's length for mlm (no segment B)
    next_sentence_labels[n]        uint8: 1 = B is random, 0 = B is the actual next (Google's);
                                   sop: 1 = A and B swapped; mlm: always 0
    fallback            [n]        uint8: 1 = a random B was wanted but none could be drawn
    masked_positions    [m]        int32: positions inside the instance, ascending per instance
    masked_offsets      [n+1]      int64: instance i's masks are masked_*[masked_offsets[i]:...[i+1]]
    masked_ids          [m]        the original token at each masked position (the MLM label)

The manifest's `options.objective` (nsp, sop or mlm; absent in data made before it existed:
nsp) says how to read the labels; shards of different objectives are not read as one dataset.

The unmasked tokens are input_ids with masked_ids written back at masked_positions, so
training can re-mask dynamically. This module knows the format; it does not create examples.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
from dataclasses import dataclass, fields
from pathlib import Path, PurePath

import numpy as np

from bertcli.errors import DataError, UsageError
from bertcli.fsutil import atomic_path, read_json, sha256_file
from bertcli.objectives import get_objective, manifest_objective

FORMAT = "bertcli-pretraining-data"
FORMAT_VERSION = 1  # of a shard file
MANIFEST_VERSION = 2  # 2: the directory carries its tokenizer in tokenizer/ (1: a path in the manifest)
MANIFEST = "manifest.json"
SPLITS = ("train", "validation")
SAFETENSORS_DTYPES = {"U8": np.uint8, "U16": np.uint16, "I16": np.int16, "I32": np.int32, "I64": np.int64}
SAFETENSORS_NAMES = {np.dtype(t).newbyteorder("<"): name for name, t in SAFETENSORS_DTYPES.items()}


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 65536 else np.int32


@dataclass
class Example:
    input_ids: np.ndarray
    segment_b_start: int
    masked_positions: np.ndarray
    masked_ids: np.ndarray
    next_sentence_label: int

    def original_ids(self) -> np.ndarray:
        ids = np.array(self.input_ids, dtype=np.int64)
        ids[self.masked_positions] = self.masked_ids
        return ids

    def segment_ids(self) -> np.ndarray:
        seg = np.zeros(len(self.input_ids), dtype=np.int64)
        seg[self.segment_b_start:] = 1
        return seg


@dataclass
class Examples:
    """Many instances as ragged arrays (the in-memory twin of a shard)."""

    input_ids: np.ndarray
    offsets: np.ndarray
    segment_b_start: np.ndarray
    next_sentence_labels: np.ndarray
    fallback: np.ndarray
    masked_positions: np.ndarray
    masked_offsets: np.ndarray
    masked_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1] - self.offsets[0])

    @property
    def num_masked(self) -> int:
        return int(self.masked_offsets[-1] - self.masked_offsets[0])

    def __getitem__(self, i: int) -> Example:
        a, b = self.offsets[i], self.offsets[i + 1]
        ma, mb = self.masked_offsets[i], self.masked_offsets[i + 1]
        return Example(self.input_ids[a:b], int(self.segment_b_start[i]), self.masked_positions[ma:mb],
                       self.masked_ids[ma:mb], int(self.next_sentence_labels[i]))

    def slice(self, start: int, stop: int) -> "Examples":
        a, b = self.offsets[start], self.offsets[stop]
        ma, mb = self.masked_offsets[start], self.masked_offsets[stop]
        return Examples(
            self.input_ids[a:b], self.offsets[start:stop + 1] - a, self.segment_b_start[start:stop],
            self.next_sentence_labels[start:stop], self.fallback[start:stop],
            self.masked_positions[ma:mb], self.masked_offsets[start:stop + 1] - ma, self.masked_ids[ma:mb])

    @staticmethod
    def concat(parts: list["Examples"]) -> "Examples":
        def joined_offsets(name: str) -> np.ndarray:
            pieces, base = [np.zeros(1, dtype=np.int64)], 0
            for p in parts:
                off = getattr(p, name)
                pieces.append(off[1:] - off[0] + base)
                base += int(off[-1] - off[0])
            return np.concatenate(pieces)

        cat = {f.name: np.concatenate([getattr(p, f.name) for p in parts])
               for f in fields(Examples) if f.name not in ("offsets", "masked_offsets")}
        return Examples(offsets=joined_offsets("offsets"), masked_offsets=joined_offsets("masked_offsets"), **cat)

    def stats(self, max_seq_length: int) -> dict:
        n = max(len(self), 1)
        mean_length = self.num_tokens / n
        return {
            "random_next_fraction": float(self.next_sentence_labels.sum()) / n,
            "mean_length": mean_length,
            "padding_fraction": 1.0 - mean_length / max_seq_length,
            "masked_per_instance": self.num_masked / n,
            "masked_fraction": self.num_masked / max(self.num_tokens, 1),
            "fallback_pairs": int(self.fallback.sum()),
        }


def write_shard(path: Path, examples: Examples | list[Examples], dtype, metadata: dict[str, str]) -> str:
    """Write one shard (the concatenation of `examples` if a list) atomically; return its sha256.

    The safetensors layout is produced here, byte for byte what `safetensors.numpy.save` makes
    of the concatenated arrays, but streamed part by part to the file and the hash: a shard is
    never built, copied or serialised as a whole in memory. `metadata` should carry
    `tokenizer_sha256`; the reader refuses a shard made with another tokenizer than expected.
    """
    parts = examples if isinstance(examples, list) else [examples]
    tensors = _shard_tensors(parts, np.dtype(dtype))
    # One metadata key: a map's keys have no fixed order, and shards must be byte-identical.
    info = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}, sort_keys=True)
    header, begin = {"__metadata__": {"bertcli": info}}, 0
    for name, chunks in tensors:
        size = sum(c.nbytes for c in chunks)
        header[name] = {"dtype": SAFETENSORS_NAMES[chunks[0].dtype], "shape": [sum(len(c) for c in chunks)],
                        "data_offsets": [begin, begin + size]}
        begin += size
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # safetensors pads the header so the data is 8-byte aligned
    digest = hashlib.sha256()
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as f:
                for block in [struct.pack("<Q", len(head)), head] + [c.data for _, chunks in tensors for c in chunks]:
                    f.write(block)
                    digest.update(block)
        except OSError as e:
            raise DataError(f"cannot write {path}: {e.strerror}; free some space or choose another directory") from None
    return digest.hexdigest()


def _shard_tensors(parts: list[Examples], token: np.dtype) -> list[tuple[str, list[np.ndarray]]]:
    """Each array of the shard as the chunks of its parts, in safetensors' order (widest first)."""
    dtypes = {"input_ids": token, "offsets": np.int64, "segment_b_start": np.int32, "next_sentence_labels": np.uint8,
              "fallback": np.uint8, "masked_positions": np.int32, "masked_offsets": np.int64, "masked_ids": token}
    tensors = []
    for name, dtype in dtypes.items():
        little = np.dtype(dtype).newbyteorder("<")
        if name in ("offsets", "masked_offsets"):  # rebase each part's offsets onto the ones before it
            chunks, base = [np.zeros(1, dtype=little)], 0
            for p in parts:
                off = getattr(p, name)
                chunks.append((off[1:] - off[0] + base).astype(little))
                base += int(off[-1] - off[0])
        else:
            chunks = [np.ascontiguousarray(getattr(p, name), dtype=little) for p in parts]
        tensors.append((name, chunks))
    tensors.sort(key=lambda t: (-t[1][0].dtype.itemsize, t[0]))
    return tensors


MAX_HEADER_BYTES = 1 << 24  # ours are a few hundred bytes; a crafted length must not make us read GBs


def load_shard(path: Path, expect_tokenizer_sha256: str | None = None) -> Examples:
    """Memory-map a shard's arrays (read-only, zero-copy, shared between processes).

    The header is checked for shape before anything is mapped: every array of the format is
    there, one-dimensional, of a known dtype, and inside the file. What the values mean is
    checked by `check_examples`. With `expect_tokenizer_sha256`, a shard that records another
    tokenizer is refused (one that records none, written by hand or by tests, is accepted).
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > min(size - 8, MAX_HEADER_BYTES):
                raise ValueError("header longer than the file")
            header = json.loads(f.read(header_len))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        base = 8 + header_len
        arrays = {name: _map_array(path, header.get(name), name, base, size) for name in EXAMPLE_FIELDS}
        meta = header.get("__metadata__", {})
        info = json.loads(meta.get("bertcli", "{}")) if isinstance(meta, dict) else {}
    except (OSError, ValueError, TypeError, struct.error, UnicodeDecodeError, RecursionError) as e:
        raise DataError(f"{path}: not a readable shard ({e}); rebuild the data with `bertcli make-data`") from None
    made_with = info.get("tokenizer_sha256") if isinstance(info, dict) else None
    if expect_tokenizer_sha256 and made_with and made_with != expect_tokenizer_sha256:
        raise DataError(f"{path}: made with tokenizer sha256 {str(made_with)[:12]}…, expected {expect_tokenizer_sha256[:12]}…; "
                        "use the matching tokenizer or rebuild the data with `bertcli make-data`")
    return Examples(**arrays)


EXAMPLE_FIELDS = tuple(f.name for f in fields(Examples))


def _map_array(path: Path, spec, name: str, base: int, size: int) -> np.ndarray:
    if not isinstance(spec, dict):
        raise ValueError(f"array {name} is missing")
    dtype, shape, span = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPES:
        raise ValueError(f"array {name} has dtype {str(dtype)[:20]}, not one of {', '.join(SAFETENSORS_DTYPES)}")
    if not (isinstance(shape, list) and len(shape) == 1 and _is_int(shape[0]) and shape[0] >= 0):
        raise ValueError(f"array {name} has shape {str(shape)[:40]}, not one dimension")
    if not (isinstance(span, list) and len(span) == 2 and all(_is_int(v) for v in span) and 0 <= span[0] <= span[1]):
        raise ValueError(f"array {name} has data_offsets {str(span)[:40]}")
    dt = np.dtype(SAFETENSORS_DTYPES[dtype]).newbyteorder("<")
    begin, end = span
    if base + end > size or end - begin != dt.itemsize * shape[0]:
        raise ValueError(f"array {name} lies outside the file")
    if shape[0] == 0:
        return np.zeros(0, dtype=dt)  # mmap cannot map nothing
    return np.memmap(path, dtype=dt, mode="r", offset=base + begin, shape=(shape[0],))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


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
MAX_SEQ_LENGTH = 512  # BERT's max_position_embeddings; longer needs a model made for it
MAX_VOCAB_SIZE = 1 << 20  # four times the largest vocabulary of a published BERT-like model
MAX_COUNT = 1 << 53  # counts stay exact as JSON numbers and as int64
SHA256 = re.compile(r"[0-9a-f]{64}")
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
    if manifest.get("format_version") not in (1, MANIFEST_VERSION):
        raise UsageError(f"{path} has format_version {str(manifest.get('format_version'))[:20]}, this bertcli reads "
                         f"1 and {MANIFEST_VERSION}; rebuild the data with `bertcli make-data`")
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
        ok = {int: _is_int(value), float: (_is_int(value) or isinstance(value, float)) and math.isfinite(value),
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
        self.get(tok, "path", "tokenizer", str, required=False)  # version 1 finds its tokenizer there
        self.get(tok, "dir", "tokenizer", str, required=False)  # version 2 carries it (artifacts.py checks it)
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
        self.get(opts, "objective", "options", str, required=False)  # absent: nsp (see objectives.py)
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


# What must agree between data directories read as one dataset, and between data and model.
SIGNATURE_OPTIONS = ("max_seq_length", "max_predictions")


def data_signature(manifest: dict) -> dict:
    return {"tokenizer_sha256": manifest["tokenizer"].get("sha256"),
            "vocab_size": manifest["tokenizer"].get("vocab_size"),
            **{k: manifest["options"].get(k) for k in SIGNATURE_OPTIONS},
            "objective": manifest_objective(manifest).name}


class PretrainingData:
    """One split of one or more data directories, as a single random-access sequence.

    Shards are checked against the manifest's sha256 before first use (or all at once with
    `verify_all`), then memory-mapped; a shard that records another tokenizer than the expected
    one (the manifest's, or `expect_tokenizer_sha256`) is refused.
    """

    def __init__(self, dirs: list[Path] | Path, split: str = "train", expect_tokenizer_sha256: str | None = None):
        dirs = [Path(d) for d in (dirs if isinstance(dirs, (list, tuple)) else [dirs])]
        if split not in SPLITS:
            raise UsageError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        self.split = split
        self.manifests = [load_manifest(d) for d in dirs]
        self.signature = data_signature(self.manifests[0])
        for d, m in zip(dirs[1:], self.manifests[1:]):
            other = data_signature(m)
            if other["objective"] != self.signature["objective"]:
                raise UsageError(f"{d} was made with --objective {other['objective']} but {dirs[0]} with "
                                 f"{self.signature['objective']}; a run trains one objective: list data of one objective in data.dir")
            for key, value in self.signature.items():
                if other[key] != value:
                    raise UsageError(f"{d} was made with {key}={other[key]} but {dirs[0]} with {value}; "
                                     "data directories read together must share tokenizer and lengths")
        if expect_tokenizer_sha256 and self.signature["tokenizer_sha256"] != expect_tokenizer_sha256:
            raise UsageError(f"{dirs[0]} was made with another tokenizer (sha256 {self.signature['tokenizer_sha256'][:12]}… "
                             f"vs {expect_tokenizer_sha256[:12]}…); use the matching tokenizer or rebuild the data")
        self.shards: list[tuple[Path, int, str, int]] = []  # (file, instances, sha256, tokens)
        self.expect_tokenizer_sha256 = expect_tokenizer_sha256 or self.signature["tokenizer_sha256"]
        for d, m in zip(dirs, self.manifests):
            for shard in m["splits"][split]["shards"]:  # validated by load_manifest
                self.shards.append((d / shard["file"], shard["instances"], shard["sha256"], shard["tokens"]))
        counts = np.array([n for _, n, _, _ in self.shards], dtype=np.int64)
        self.cumulative = np.concatenate([[0], np.cumsum(counts)])
        self._loaded: dict[int, Examples] = {}
        self.dirs = dirs

    @property
    def max_seq_length(self) -> int:
        return int(self.signature["max_seq_length"])

    @property
    def max_predictions(self) -> int:
        return int(self.signature["max_predictions"])

    @property
    def vocab_size(self) -> int:
        return int(self.signature["vocab_size"])

    @property
    def objective(self):
        """The `objectives.Objective` the data was made for (nsp, sop or mlm)."""
        return get_objective(self.signature["objective"])

    def __len__(self) -> int:
        return int(self.cumulative[-1])

    def shard(self, k: int) -> Examples:
        if k not in self._loaded:
            path, count, sha, tokens = self.shards[k]
            if not path.is_file():  # also refuses a FIFO or a device, whose reading would never end
                what = "is not a regular file" if path.exists() else "is missing"
                raise DataError(f"{path}: shard listed in the manifest {what}; rebuild the data with `bertcli make-data`")
            try:
                actual = sha256_file(path)
            except OSError as e:
                raise DataError(f"{path}: cannot read the shard ({e.strerror})") from None
            if actual != sha:
                raise DataError(f"{path}: sha256 differs from the manifest (corrupt or modified); rebuild the data with `bertcli make-data`")
            examples = load_shard(path, self.expect_tokenizer_sha256)
            check_examples(examples, path, self.vocab_size, self.max_seq_length, self.max_predictions,
                           paired=self.objective.has_sentence_task)
            if len(examples) != count or examples.num_tokens != tokens:
                raise DataError(f"{path}: holds {len(examples)} instances of {examples.num_tokens} tokens, the manifest "
                                f"says {count} of {tokens}; rebuild the data")
            self._loaded[k] = examples
        return self._loaded[k]

    def verify_all(self) -> None:
        for k in range(len(self.shards)):
            self.shard(k)

    def __getitem__(self, i: int) -> Example:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self.cumulative, i, side="right") - 1)
        return self.shard(k)[i - int(self.cumulative[k])]
