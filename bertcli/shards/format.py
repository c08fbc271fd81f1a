"""The on-disk format of pretraining examples: a shard file's layout, written and memory-mapped.

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
training can re-mask dynamically. This module knows the format; it does not create examples;
validation.py checks what a file claims, dataset.py reads splits of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from bertcli.errors import DataError
from bertcli.fsutil import atomic_path
from bertcli.limits import is_int

FORMAT = "bertcli-pretraining-data"
FORMAT_VERSION = 1  # of a shard file
MANIFEST_VERSION = 2  # of manifest.json; the directory carries its tokenizer in tokenizer/
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
    if not (isinstance(shape, list) and len(shape) == 1 and is_int(shape[0]) and shape[0] >= 0):
        raise ValueError(f"array {name} has shape {str(shape)[:40]}, not one dimension")
    if not (isinstance(span, list) and len(span) == 2 and all(is_int(v) for v in span) and 0 <= span[0] <= span[1]):
        raise ValueError(f"array {name} has data_offsets {str(span)[:40]}")
    dt = np.dtype(SAFETENSORS_DTYPES[dtype]).newbyteorder("<")
    begin, end = span
    if base + end > size or end - begin != dt.itemsize * shape[0]:
        raise ValueError(f"array {name} lies outside the file")
    if shape[0] == 0:
        return np.zeros(0, dtype=dt)  # mmap cannot map nothing
    return np.memmap(path, dtype=dt, mode="r", offset=base + begin, shape=(shape[0],))
