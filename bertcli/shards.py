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
import struct
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from bertcli.errors import DataError, UsageError
from bertcli.fsutil import atomic_path, read_json, sha256_file
from bertcli.objectives import get_objective, manifest_objective

FORMAT = "bertcli-pretraining-data"
FORMAT_VERSION = 1
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


def load_shard(path: Path, expect_tokenizer_sha256: str | None = None) -> Examples:
    """Memory-map a shard's arrays (read-only, zero-copy, shared between processes).

    With `expect_tokenizer_sha256`, a shard that records another tokenizer is refused (one
    that records none, written by hand or by tests, is accepted).
    """
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(header_len))
        base = 8 + header_len
        arrays = {}
        for f_ in fields(Examples):
            spec = header[f_.name]
            dtype = np.dtype(SAFETENSORS_DTYPES[spec["dtype"]])
            begin, end = spec["data_offsets"]
            if base + end > size or (end - begin) != dtype.itemsize * int(np.prod(spec["shape"])):
                raise ValueError(f"{f_.name} lies outside the file")
            arrays[f_.name] = np.memmap(path, dtype=dtype, mode="r", offset=base + begin, shape=tuple(spec["shape"]))
        info = json.loads(header.get("__metadata__", {}).get("bertcli", "{}"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable shard ({e}); rebuild the data with `bertcli make-data`") from None
    made_with = info.get("tokenizer_sha256") if isinstance(info, dict) else None
    if expect_tokenizer_sha256 and made_with and made_with != expect_tokenizer_sha256:
        raise DataError(f"{path}: made with tokenizer sha256 {made_with[:12]}…, expected {expect_tokenizer_sha256[:12]}…; "
                        "use the matching tokenizer or rebuild the data with `bertcli make-data`")
    return Examples(**arrays)


def load_manifest(data_dir: Path) -> dict:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UsageError(f"data directory {data_dir} does not exist; make it with `bertcli make-data`")
    path = data_dir / MANIFEST
    if not path.is_file():
        hint = "an interrupted make-data: finish it with --resume" if (data_dir / "progress.json").is_file() \
            else "make it with `bertcli make-data`"
        raise UsageError(f"{data_dir} is not a make-data output (no {MANIFEST}); {hint}")
    manifest = read_json(path, "data manifest")
    if manifest.get("format") != FORMAT:
        raise UsageError(f"{path} is not a bertcli data manifest; make the data with `bertcli make-data`")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UsageError(f"{path} has format_version {manifest.get('format_version')}, this bertcli reads "
                         f"{FORMAT_VERSION}; rebuild the data with `bertcli make-data`")
    for key in ("tokenizer", "options", "splits"):
        if not isinstance(manifest.get(key), dict):
            raise DataError(f"{path}: key {key!r} is missing or malformed; the manifest was edited, rebuild the data")
    manifest_objective(manifest, path)
    return manifest


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
        self.shards: list[tuple[Path, int, str]] = []
        self.expect_tokenizer_sha256 = expect_tokenizer_sha256 or self.signature["tokenizer_sha256"]
        for d, m in zip(dirs, self.manifests):
            split_info = m["splits"].get(split) or {}
            for shard in split_info.get("shards", []):
                try:
                    self.shards.append((d / shard["file"], int(shard["instances"]), str(shard["sha256"])))
                except (KeyError, TypeError, ValueError):
                    raise DataError(f"{d / MANIFEST}: a shard entry of split {split!r} is malformed; the manifest was edited, rebuild the data") from None
        counts = np.array([n for _, n, _ in self.shards], dtype=np.int64)
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
            path, count, sha = self.shards[k]
            if not path.is_file():
                raise DataError(f"{path}: shard listed in the manifest is missing; rebuild the data with `bertcli make-data`")
            if sha256_file(path) != sha:
                raise DataError(f"{path}: sha256 differs from the manifest (corrupt or modified); rebuild the data with `bertcli make-data`")
            examples = load_shard(path, self.expect_tokenizer_sha256)
            if len(examples) != count:
                raise DataError(f"{path}: holds {len(examples)} instances, the manifest says {count}; rebuild the data")
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
