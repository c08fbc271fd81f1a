"""From shards to model inputs: the order of examples, padding, dynamic re-masking, the loader.

The order is a pure function of (seed, epoch), built in two levels so that no process ever
holds a permutation of the whole dataset:

1. the shards are shuffled (a permutation of the shard count, drawn from (seed, epoch));
2. the shuffled shards are taken `window` at a time, and each window's examples are shuffled
   together (a permutation of at most `window` shards' examples, drawn from (seed, epoch, window
   index)), so a batch mixes several shards rather than reading one shard in a row.

Optimizer step s takes the s-th slice of global_batch_size positions of its epoch's order (an
incomplete last slice is dropped). Resuming at step s therefore *seeks* — nothing is replayed —
and every rank and every DataLoader worker computes its own share without talking to the
others, in memory bounded by the shard count and `window` shards, never by the dataset size.

A batch is padded to its own longest sequence rounded up to a multiple of 8, never to
max_seq_length; masked positions are padded to max_predictions (label -100) so the masked-LM
head always sees the same shape. The counts the trainer needs (tokens, masked tokens, whether
anything is padded) are computed here, on the host, so reading them never waits for a GPU.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, fields

import numpy as np
import torch

from bertcli.config import DataConfig
from bertcli.errors import UsageError
from bertcli.instances import MaskingParams, mask_tokens
from bertcli.model import IGNORE_INDEX
from bertcli.objectives import remask_params
from bertcli.shards import Example, PretrainingData

PAD_MULTIPLE = 8


@dataclass
class BatchCounts:
    """Host-side facts about a batch, known before it is copied to the device."""

    num_tokens: int  # non-padding tokens
    num_masked: int  # real masked positions (labels other than -100)
    is_padded: bool  # whether any sequence is shorter than the batch
    attention_pairs: int  # Σ length² over the sequences: the (query, key) pairs attention needs (utilization.py)


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) int64
    token_type_ids: torch.Tensor  # (B, T) int64
    attention_mask: torch.Tensor  # (B, T) bool
    masked_positions: torch.Tensor  # (B, P) int64
    masked_labels: torch.Tensor  # (B, P) int64, -100 in padding slots
    next_sentence_labels: torch.Tensor  # (B,) int64
    counts: BatchCounts | None = None  # filled by collate; derived from the tensors when absent

    def _tensors(self) -> list[torch.Tensor]:
        return [getattr(self, f.name) for f in fields(self) if f.name != "counts"]

    def to(self, device: torch.device) -> "Batch":
        non_blocking = device.type == "cuda"
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in self._tensors()), counts=self.counts)

    def pin_memory(self) -> "Batch":
        return Batch(*(t.pin_memory() for t in self._tensors()), counts=self.counts)

    def _counts(self) -> BatchCounts:
        if self.counts is None:  # a Batch built by hand (tests, benchmarks)
            lengths = self.attention_mask.sum(1)
            self.counts = BatchCounts(int(lengths.sum()), int((self.masked_labels != IGNORE_INDEX).sum()),
                                      not bool(self.attention_mask.all()), int((lengths * lengths).sum()))
        return self.counts

    @property
    def num_tokens(self) -> int:
        return self._counts().num_tokens

    @property
    def num_masked(self) -> int:
        return self._counts().num_masked

    @property
    def is_padded(self) -> bool:
        return self._counts().is_padded

    @property
    def attention_pairs(self) -> int:
        return self._counts().attention_pairs

    def model_inputs(self, padded: bool = True) -> dict:
        """The model's keyword arguments; padded=False leaves out the all-true attention mask, which
        lets attention skip masking (and use flash kernels)."""
        inputs = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "counts"}
        if not padded:
            inputs["attention_mask"] = None
        return inputs


def collate(examples: list[Example], max_predictions: int, remask: tuple[MaskingParams, np.random.Generator] | None = None,
            pad_multiple: int = PAD_MULTIPLE) -> Batch:
    """Pad a list of examples into a Batch; with `remask`, draw fresh masks from the original tokens."""
    B = len(examples)
    if remask is not None:
        examples = _remask(examples, *remask)
    lengths = [len(e.input_ids) for e in examples]
    longest = max(lengths)
    T = -(-longest // pad_multiple) * pad_multiple
    input_ids = np.zeros((B, T), dtype=np.int64)
    token_type = np.zeros((B, T), dtype=np.int64)
    attention = np.zeros((B, T), dtype=bool)
    positions = np.zeros((B, max_predictions), dtype=np.int64)
    labels = np.full((B, max_predictions), IGNORE_INDEX, dtype=np.int64)
    nsp = np.zeros(B, dtype=np.int64)
    masked = 0
    for i, e in enumerate(examples):
        n, k = len(e.input_ids), len(e.masked_positions)
        input_ids[i, :n] = e.input_ids
        token_type[i, e.segment_b_start:n] = 1
        attention[i, :n] = True
        positions[i, :k] = e.masked_positions
        labels[i, :k] = e.masked_ids
        nsp[i] = e.next_sentence_label
        masked += k
    counts = BatchCounts(sum(lengths), masked, min(lengths) < T, sum(n * n for n in lengths))
    return Batch(*(torch.from_numpy(a) for a in (input_ids, token_type, attention, positions, labels, nsp)), counts=counts)


def _remask(examples: list[Example], params: MaskingParams, rng: np.random.Generator) -> list[Example]:
    originals = [e.original_ids() for e in examples]
    offsets = np.concatenate([[0], np.cumsum([len(o) for o in originals])])
    masked = mask_tokens(np.concatenate(originals), offsets, params, rng)
    bounds = np.concatenate([[0], np.cumsum(masked.counts)])
    return [Example(masked.input_ids[offsets[i]:offsets[i + 1]], e.segment_b_start,
                    masked.positions[bounds[i]:bounds[i + 1]], masked.original_ids[bounds[i]:bounds[i + 1]],
                    e.next_sentence_label) for i, e in enumerate(examples)]


def carried_tokenizer(data: PretrainingData, needed: bool):
    """The data's tokenizer (the copy the data directory carries; see artifacts.py). Data from before
    tokenizers travelled with it may have lost its tokenizer: then None, unless `needed`."""
    from bertcli.artifacts import data_tokenizer
    from bertcli.tokenizer import ARTIFACT_DIR

    try:
        return data_tokenizer(data.dirs[0], data.manifests[0])
    except UsageError:
        if needed or (data.dirs[0] / ARTIFACT_DIR).is_dir():
            raise
        return None


def dynamic_masking(data: PretrainingData, masking: DataConfig, tokenizer) -> MaskingParams | None:
    """The masking parameters to re-draw masks with (data.masking: dynamic): the data's own options,
    or the config's data.masked_lm_prob / mask_replace_prob / random_replace_prob where set, with
    its tokenizer's ids (special, replacement, word starts)."""
    if masking.masking != "dynamic":
        return None
    return remask_params(data.manifests[0]["options"], data.max_seq_length, data.max_predictions, tokenizer,
                         masking.masked_lm_prob, masking.mask_replace_prob, masking.random_replace_prob)


class BatchPlan:
    """Which examples every (step, micro-step, rank) reads: a pure function of (seed, epoch).

    `shard_sizes` are the example counts of the shards in the order the data lists them; the
    global index of example j of shard k is sum(shard_sizes[:k]) + j.
    """

    def __init__(self, shard_sizes, global_batch_size: int, micro_batch_size: int, world_size: int, seed: int,
                 window: int = 8):
        self.shard_sizes = np.asarray(shard_sizes, dtype=np.int64)
        self.shard_starts = np.concatenate([[0], np.cumsum(self.shard_sizes)])
        self.num_examples = int(self.shard_starts[-1])
        if self.num_examples < global_batch_size:
            raise UsageError(f"the training split has {self.num_examples} examples, fewer than train.global_batch_size "
                             f"({global_batch_size}); lower the batch size or make more data")
        self.global_batch_size, self.micro_batch_size, self.world_size = global_batch_size, micro_batch_size, world_size
        self.seed, self.window = seed, window
        self.accumulation = global_batch_size // (micro_batch_size * world_size)
        self.steps_per_epoch = self.num_examples // global_batch_size
        self._epoch, self._groups = -1, None
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def _epoch_groups(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(shards in this epoch's order, start position of each window of `window` of them)."""
        if epoch != self._epoch:
            order = np.random.default_rng([self.seed, 3, epoch]).permutation(len(self.shard_sizes))
            sizes = self.shard_sizes[order]
            window_sizes = np.add.reduceat(sizes, np.arange(0, len(order), self.window)) if len(order) else sizes
            self._epoch, self._groups = epoch, (order, np.concatenate([[0], np.cumsum(window_sizes)]))
            self._perms.clear()
        return self._groups

    def _window_perm(self, epoch: int, g: int, size: int) -> np.ndarray:
        key = (epoch, g)
        if key not in self._perms:
            if len(self._perms) >= 2:  # a step straddles at most two windows
                self._perms.pop(next(iter(self._perms)))
            self._perms[key] = np.random.default_rng([self.seed, 3, epoch, g]).permutation(size)
        return self._perms[key]

    def positions_to_indices(self, epoch: int, positions: np.ndarray) -> np.ndarray:
        """Global example indices at `positions` of epoch `epoch`'s order."""
        order, window_starts = self._epoch_groups(epoch)
        out = np.empty(len(positions), dtype=np.int64)
        windows = np.searchsorted(window_starts, positions, side="right") - 1
        for g in np.unique(windows):
            members = order[g * self.window:(g + 1) * self.window]
            member_starts = np.concatenate([[0], np.cumsum(self.shard_sizes[members])])
            here = windows == g
            perm = self._window_perm(epoch, int(g), int(member_starts[-1]))
            q = perm[positions[here] - window_starts[g]]
            k = np.searchsorted(member_starts, q, side="right") - 1
            out[here] = self.shard_starts[members[k]] + (q - member_starts[k])
        return out

    def step_indices(self, step: int) -> np.ndarray:
        epoch, b = divmod(step, self.steps_per_epoch)
        return self.positions_to_indices(epoch, np.arange(b * self.global_batch_size, (b + 1) * self.global_batch_size))

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


def _ignore_stop_signals(worker_id: int) -> None:
    # The training process decides when to stop (finish the step, checkpoint); a worker killed by the
    # same Ctrl-C / SIGTERM would break the step it is loading. The parent shuts workers down.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


def make_loader(data: PretrainingData, plan: BatchPlan, rank: int, remask: MaskingParams | None, first_step: int,
                last_step: int, num_workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    """Micro-batches of steps first_step .. last_step - 1 for one rank, in order."""
    accum = plan.accumulation
    return torch.utils.data.DataLoader(
        MicroBatches(data, plan, rank, remask), batch_size=None, sampler=range(first_step * accum, last_step * accum),
        num_workers=num_workers, pin_memory=pin_memory, worker_init_fn=_ignore_stop_signals if num_workers else None)


def eval_batches(data: PretrainingData, batch_size: int, max_batches: int = 0):
    """Validation batches in a fixed order (deterministic evaluation); max_batches 0 means all."""
    n = len(data)
    count = -(-n // batch_size)
    if max_batches:
        count = min(count, max_batches)
    for b in range(count):
        yield collate([data[i] for i in range(b * batch_size, min((b + 1) * batch_size, n))], data.max_predictions)
