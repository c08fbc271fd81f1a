"""The pretraining objectives: what the rest of bertcli reads about one, and who builds its instances.

An `Objective` says whether it has a sentence task, what its label 1 means and the names of its
metrics, and it owns its builder: make-data calls `objective.build(...)` and never compares
names. One module per objective (nsp.py: BERT's next sentence, sop.py: ALBERT's sentence order,
mlm.py: RoBERTa's packed sequences); pairs.py holds what nsp and sop share (the chunk walk,
truncation, assembly). Adding an objective adds a module and a line in OBJECTIVES.

The data's manifest records the objective (`options.objective`; data made before it existed is
`nsp`), and pretrain, eval and export follow it rather than guess. Masking itself is
instances.mask_tokens for every objective; `remask_params` only chooses its parameters for
pretrain. Not here: files, processes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from bertcli.errors import DataError, UsageError


@dataclass(frozen=True)
class Objective:
    name: str
    sentence_metric: str | None  # eval's metric stem: next_sentence_accuracy / sentence_order_accuracy
    sentence_log: str | None  # the short stem in metrics.jsonl: nsp_loss / sop_loss
    label_names: tuple[str, str] | None  # what labels 0 and 1 mean
    random_next: bool = False  # B may come from another document (make-data's warnings about fallbacks apply)

    @property
    def has_sentence_task(self) -> bool:
        return self.sentence_metric is not None

    @property
    def builder(self) -> ModuleType:
        """The module bertcli/objectives/<name>.py, which builds this objective's instances.

        Every builder module has `build(window, options, special ids, seed, rng) -> pairs.Built`,
        `summarize(stats, counters, instances) -> the split's manifest stats` and
        `check_data(train split summary, input names)`, which refuses a corpus it cannot learn
        from. Imported on first use: naming the objectives costs no numpy.
        """
        return importlib.import_module(f"{__name__}.{self.name}")


OBJECTIVES = {
    "nsp": Objective("nsp", "next_sentence", "nsp", ("actual next", "random next"), random_next=True),
    "sop": Objective("sop", "sentence_order", "sop", ("in order", "swapped")),
    "mlm": Objective("mlm", None, None, None),
}
DEFAULT = "nsp"  # BERT's; also what data made before objectives existed holds


def get_objective(name: str | None) -> Objective:
    if name is None:
        return OBJECTIVES[DEFAULT]
    if name not in OBJECTIVES:
        raise UsageError(f"objective {name!r} is not one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def manifest_objective(manifest: dict, where="the data manifest") -> Objective:
    """The objective a make-data output was built for; a crafted value is a one-line error."""
    name = manifest.get("options", {}).get("objective", DEFAULT)
    if not isinstance(name, str) or name not in OBJECTIVES:
        raise DataError(f"{where}: options.objective is {name!r}, not one of {', '.join(OBJECTIVES)}; rebuild the data")
    return OBJECTIVES[name]


def checkpoint_objective(state: dict, ckpt) -> Objective:
    """The objective a checkpoint was trained for (its data signature; checkpoints from before objectives: nsp)."""
    signature = state.get("data_signature")
    name = signature.get("objective", DEFAULT) if isinstance(signature, dict) else DEFAULT
    if not isinstance(name, str) or name not in OBJECTIVES:
        raise DataError(f"checkpoint {ckpt}: data_signature.objective is {name!r}, not one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def remask_params(options: dict, max_seq_length: int, max_predictions: int, tokenizer,
                  masked_lm_prob: float | None = None, mask_replace_prob: float | None = None,
                  random_replace_prob: float | None = None):
    """Masking for pretrain's dynamic masks: the data's options (a manifest's, checked by
    shards.ManifestCheck), each overridable, with the tokenizer's ids.

    A rate of its own gets max_predictions derived as make-data derives it (ceil(length x rate)),
    so a 30 % rate on data made at 15 % is not capped at the data's 20 positions. Returns an
    instances.MaskingParams.
    """
    from bertcli.instances import MaskingParams
    from bertcli.make_data.options import derived_max_predictions

    rate = options["masked_lm_prob"] if masked_lm_prob is None else masked_lm_prob
    if rate != options["masked_lm_prob"]:
        max_predictions = derived_max_predictions(max_seq_length, rate)
    # data made before the split was configurable used BERT's 0.8 / 0.1
    mask_replace = options.get("mask_replace_prob", 0.8) if mask_replace_prob is None else mask_replace_prob
    random_replace = options.get("random_replace_prob", 0.1) if random_replace_prob is None else random_replace_prob
    return MaskingParams.from_tokenizer(tokenizer, rate, max_predictions, bool(options.get("whole_word_mask")),
                                        mask_replace, random_replace)
