"""The dataset: one split of one or more data directories as a single random-access sequence.

Shards are verified (sha256, then `check_examples`) before first use and memory-mapped; the
directories read together must agree on tokenizer, lengths and objective.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bertcli.errors import DataError, UsageError
from bertcli.fsutil import sha256_file
from bertcli.objectives import get_objective, manifest_objective
from bertcli.shards.format import SPLITS, Example, Examples, load_shard
from bertcli.shards.validation import check_examples, load_manifest


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
