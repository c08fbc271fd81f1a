import numpy as np
import pytest

from bertcli.batches import BatchPlan, collate
from bertcli.errors import UsageError
from bertcli.shards import Example


def epoch_order(plan: BatchPlan, epoch: int) -> np.ndarray:
    steps = range(epoch * plan.steps_per_epoch, (epoch + 1) * plan.steps_per_epoch)
    return np.concatenate([plan.step_indices(s) for s in steps])


@pytest.mark.parametrize("sizes", [[100], [30, 0, 45, 25], [7] * 40, [1, 99, 3, 50, 50, 1]])
def test_an_epoch_reads_every_example_once(sizes):
    plan = BatchPlan(sizes, global_batch_size=4, micro_batch_size=2, world_size=1, seed=5, window=3)
    total = sum(sizes)
    order = epoch_order(plan, 0)
    assert len(order) == (total // 4) * 4
    assert len(set(order.tolist())) == len(order) and order.min() >= 0 and order.max() < total
    assert not np.array_equal(order, epoch_order(plan, 1))  # every epoch its own order


def test_order_is_a_pure_function_of_seed_and_step():
    sizes = [13] * 20
    a = BatchPlan(sizes, 8, 4, 2, seed=1)
    b = BatchPlan(sizes, 8, 4, 2, seed=1)
    for s in (0, 5, 31, 7, 64):  # b seeks straight to each step, a has read others before
        a.step_indices(s + 1)
        assert np.array_equal(a.micro_indices(s, 1, 1), b.micro_indices(s, 1, 1))
    assert not np.array_equal(a.step_indices(0), BatchPlan(sizes, 8, 4, 2, seed=2).step_indices(0))
    # the ranks' and micro-steps' shares partition the step
    shares = np.concatenate([a.micro_indices(3, m, r) for m in range(2) for r in range(2)])
    assert sorted(shares.tolist()) == sorted(a.step_indices(3).tolist())


def test_batches_mix_shards_within_the_window():
    sizes = [1000] * 16
    plan = BatchPlan(sizes, 64, 64, 1, seed=0, window=8)
    shards = plan.step_indices(0) // 1000
    assert len(set(shards.tolist())) >= 4  # not one shard read in a row


def test_memory_does_not_grow_with_the_dataset():
    """10^9 examples in 10^4 shards: a step's indices without a permutation of the whole dataset
    (which alone would take 8 GB)."""
    import tracemalloc
    sizes = np.full(10_000, 100_000)
    tracemalloc.start()
    plan = BatchPlan(sizes, 256, 32, 1, seed=3)
    idx = plan.micro_indices(123_456, 3, 0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(idx) == 32 and idx.max() < 10**9
    assert peak < 64 * 2**20, peak


def test_too_little_data_is_a_usage_error():
    with pytest.raises(UsageError, match="fewer than train.global_batch_size"):
        BatchPlan([3, 4], 8, 8, 1, seed=0)


def test_collate_counts_on_the_host():
    examples = [Example(np.array([2, 5, 6, 3]), 2, np.array([1]), np.array([9]), 0),
                Example(np.array([2, 5, 3]), 2, np.array([1, 2]), np.array([7, 8]), 1)]
    batch = collate(examples, max_predictions=3)
    assert (batch.num_tokens, batch.num_masked, batch.is_padded) == (7, 3, True)
    assert batch.input_ids.shape == (2, 8)
    assert batch.to(batch.input_ids.device).counts == batch.counts
