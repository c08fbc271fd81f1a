"""From shards to model inputs: the order of examples, padding, and dynamic re-masking.

The order is a pure function of (seed, step): epoch e uses the permutation drawn from
(seed, e), and optimizer step s takes the s-th slice of global_batch_size examples from it
(an incomplete last slice is dropped). Resuming at step s therefore *seeks* — nothing is
replayed — and every rank can compute its own share without talking to the others.

A batch is padded to its own longest sequence rounded up to a multiple of 8, never to
max_seq_length; masked positions are padded to max_predictions (label -100) so the masked-LM
head always sees the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from bertcli.errors import UsageError
from bertcli.instances import MaskingParams, mask_tokens
from bertcli.model import IGNORE_INDEX
from bertcli.shards import Example, PretrainingData

PAD_MULTIPLE = 8


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) int64
    token_type_ids: torch.Tensor  # (B, T) int64
    attention_mask: torch.Tensor  # (B, T) bool
    masked_positions: torch.Tensor  # (B, P) int64
    masked_labels: torch.Tensor  # (B, P) int64, -100 in padding slots
    next_sentence_labels: torch.Tensor  # (B,) int64

    def to(self, device: torch.device) -> "Batch":
        non_blocking = device.type == "cuda"
        return Batch(*(getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)))

    def pin_memory(self) -> "Batch":
        return Batch(*(getattr(self, f.name).pin_memory() for f in fields(self)))

    @property
    def num_tokens(self) -> int:
        """Non-padding tokens."""
        return int(self.attention_mask.sum())

    @property
    def num_masked(self) -> int:
        return int((self.masked_labels != IGNORE_INDEX).sum())

    @property
    def is_padded(self) -> bool:
        """Whether any sequence is shorter than the batch (read it on the host: on a GPU it waits)."""
        return not bool(self.attention_mask.all())

    def model_inputs(self, padded: bool = True) -> dict:
        """The model's keyword arguments; padded=False leaves out the all-true attention mask, which
        lets attention skip masking (and use flash kernels)."""
        inputs = {f.name: getattr(self, f.name) for f in fields(self)}
        if not padded:
            inputs["attention_mask"] = None
        return inputs


def collate(examples: list[Example], max_predictions: int, remask: tuple[MaskingParams, np.random.Generator] | None = None,
            pad_multiple: int = PAD_MULTIPLE) -> Batch:
    """Pad a list of examples into a Batch; with `remask`, draw fresh masks from the original tokens."""
    B = len(examples)
    if remask is not None:
        examples = _remask(examples, *remask)
    longest = max(len(e.input_ids) for e in examples)
    T = -(-longest // pad_multiple) * pad_multiple
    input_ids = np.zeros((B, T), dtype=np.int64)
    token_type = np.zeros((B, T), dtype=np.int64)
    attention = np.zeros((B, T), dtype=bool)
    positions = np.zeros((B, max_predictions), dtype=np.int64)
    labels = np.full((B, max_predictions), IGNORE_INDEX, dtype=np.int64)
    nsp = np.zeros(B, dtype=np.int64)
    for i, e in enumerate(examples):
        n, k = len(e.input_ids), len(e.masked_positions)
        input_ids[i, :n] = e.input_ids
        token_type[i, e.segment_b_start:n] = 1
        attention[i, :n] = True
        positions[i, :k] = e.masked_positions
        labels[i, :k] = e.masked_ids
        nsp[i] = e.next_sentence_label
    return Batch(*(torch.from_numpy(a) for a in (input_ids, token_type, attention, positions, labels, nsp)))


def _remask(examples: list[Example], params: MaskingParams, rng: np.random.Generator) -> list[Example]:
    originals = [e.original_ids() for e in examples]
    offsets = np.concatenate([[0], np.cumsum([len(o) for o in originals])])
    masked = mask_tokens(np.concatenate(originals), offsets, params, rng)
    bounds = np.concatenate([[0], np.cumsum(masked.counts)])
    return [Example(masked.input_ids[offsets[i]:offsets[i + 1]], e.segment_b_start,
                    masked.positions[bounds[i]:bounds[i + 1]], masked.original_ids[bounds[i]:bounds[i + 1]],
                    e.next_sentence_label) for i, e in enumerate(examples)]


class BatchPlan:
    """Which examples every (step, micro-step, rank) reads; a pure function of the seed."""

    def __init__(self, num_examples: int, global_batch_size: int, micro_batch_size: int, world_size: int, seed: int):
        if num_examples < global_batch_size:
            raise UsageError(f"the training split has {num_examples} examples, fewer than train.global_batch_size "
                             f"({global_batch_size}); lower the batch size or make more data")
        self.num_examples, self.global_batch_size = num_examples, global_batch_size
        self.micro_batch_size, self.world_size, self.seed = micro_batch_size, world_size, seed
        self.accumulation = global_batch_size // (micro_batch_size * world_size)
        self.steps_per_epoch = num_examples // global_batch_size
        self._perm_epoch, self._perm = -1, None

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def step_indices(self, step: int) -> np.ndarray:
        epoch, b = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
            self._perm_epoch = epoch
        return self._perm[b * self.global_batch_size:(b + 1) * self.global_batch_size]

    def micro_indices(self, step: int, micro: int, rank: int) -> np.ndarray:
        start = (micro * self.world_size + rank) * self.micro_batch_size
        return self.step_indices(step)[start:start + self.micro_batch_size]


class MicroBatches(torch.utils.data.Dataset):
    """Item k is micro-step k % accumulation of step k // accumulation, for one rank, collated."""

    def __init__(self, data: PretrainingData, plan: BatchPlan, rank: int, remask_params: MaskingParams | None):
        self.data, self.plan, self.rank, self.remask_params = data, plan, rank, remask_params

    def __len__(self) -> int:
        return 2**62  # addressed by the sampler, never iterated to the end

    def __getitem__(self, k: int) -> Batch:
        step, micro = divmod(k, self.plan.accumulation)
        indices = self.plan.micro_indices(step, micro, self.rank)
        remask = None
        if self.remask_params is not None:
            rng = np.random.default_rng([self.plan.seed, 1, step, micro, self.rank])
            remask = (self.remask_params, rng)
        # a dynamic rate of its own may mask more positions than the data's masks did
        width = self.data.max_predictions if self.remask_params is None else self.remask_params.max_predictions
        return collate([self.data[int(i)] for i in indices], width, remask)


def eval_batches(data: PretrainingData, batch_size: int, max_batches: int = 0):
    """Validation batches in a fixed order (deterministic evaluation); max_batches 0 means all."""
    n = len(data)
    count = -(-n // batch_size)
    if max_batches:
        count = min(count, max_batches)
    for b in range(count):
        yield collate([data[i] for i in range(b * batch_size, min((b + 1) * batch_size, n))], data.max_predictions)
