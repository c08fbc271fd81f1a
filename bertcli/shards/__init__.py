"""Pretraining data on disk: the shard format (format.py), its validation (validation.py) and the
dataset that reads it (dataset.py). The names below are the package's public surface.
"""

from bertcli.limits import MAX_SEQ_LENGTH
from bertcli.shards.dataset import SIGNATURE_OPTIONS, PretrainingData, data_signature
from bertcli.shards.format import (EXAMPLE_FIELDS, FORMAT, FORMAT_VERSION, MANIFEST, MANIFEST_VERSION, SPLITS, Example,
                                   Examples, load_shard, token_dtype, write_shard)
from bertcli.shards.validation import ManifestCheck, check_examples, load_manifest

__all__ = ["EXAMPLE_FIELDS", "FORMAT", "FORMAT_VERSION", "MANIFEST", "MANIFEST_VERSION", "MAX_SEQ_LENGTH",
           "SIGNATURE_OPTIONS", "SPLITS", "Example", "Examples", "ManifestCheck", "PretrainingData",
           "check_examples", "data_signature", "load_manifest", "load_shard", "token_dtype", "write_shard"]
