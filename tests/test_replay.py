"""TensorBuffer and MixedSampler: ring overwrite, sampling, checkpoints, mixing statistics."""
import numpy as np
import pytest
import torch

from baselines.replay import Batch, MixedSampler, TensorBuffer, transition_arrays


def rows(start: int, count: int, obs_dim: int = 3, act_dim: int = 2):
    """Transitions whose every field encodes its row id, so where each row landed is checkable."""
    ids = torch.arange(start, start + count, dtype=torch.float32)
    return (ids[:, None].repeat(1, obs_dim), ids[:, None].repeat(1, act_dim) / 1000, ids, ids[:, None].repeat(1, obs_dim) + 0.5,
            (ids % 2 == 0).float())


def test_add_and_ring_overwrite_keep_the_newest_rows():
    buffer = TensorBuffer(capacity=5, obs_dim=3, act_dim=2, device="cpu")
    buffer.add(*rows(0, 3))
    assert buffer.size == len(buffer) == 3
    buffer.add(*rows(3, 4))  # 7 rows into 5 slots: rows 0 and 1 are overwritten
    assert buffer.size == 5
    assert sorted(buffer.rewards.tolist()) == [2, 3, 4, 5, 6]
    assert buffer.rewards.tolist() == [5, 6, 2, 3, 4]  # written in ring order
    # every field of a row moved together
    assert torch.equal(buffer.observations[:, 0], buffer.rewards)
    assert torch.equal(buffer.next_observations[:, 0], buffer.rewards + 0.5)
    assert torch.equal(buffer.dones, (buffer.rewards % 2 == 0).float())


def test_add_more_than_capacity_at_once_keeps_the_last_capacity_rows():
    buffer = TensorBuffer(capacity=4, obs_dim=3, act_dim=2, device="cpu")
    buffer.add(*rows(0, 2))
    buffer.add(*rows(2, 10))
    assert buffer.size == 4
    assert sorted(buffer.rewards.tolist()) == [8, 9, 10, 11]
    buffer.add(*rows(12, 1))  # the next write replaces the oldest row (8)
    assert sorted(buffer.rewards.tolist()) == [9, 10, 11, 12]


def test_add_rejects_wrong_shapes_with_the_field_name():
    buffer = TensorBuffer(capacity=4, obs_dim=3, act_dim=2, device="cpu")
    obs, act, rew, next_obs, dones = rows(0, 2)
    with pytest.raises(ValueError, match="actions has shape"):
        buffer.add(obs, act[:, :1], rew, next_obs, dones)


def test_sample_is_uniform_over_stored_rows_and_reproducible():
    buffer = TensorBuffer.from_arrays(*[x.numpy() for x in rows(0, 10)], device="cpu", capacity=20)
    batch = buffer.sample(20_000, torch.Generator().manual_seed(1))
    assert isinstance(batch, Batch)
    assert batch.observations.shape == (20_000, 3) and batch.dones.shape == (20_000,)
    counts = np.bincount(batch.rewards.long().numpy(), minlength=10)
    assert counts.shape == (10,)  # never an empty (unwritten) slot
    assert counts.min() > 1_700 and counts.max() < 2_300  # 2000 +- 7 sd
    again = buffer.sample(20_000, torch.Generator().manual_seed(1))
    assert torch.equal(batch.rewards, again.rewards)


def test_sample_from_empty_buffer_is_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        TensorBuffer(4, 3, 2, "cpu").sample(8)


def test_state_dict_round_trip_restores_rows_and_write_position():
    buffer = TensorBuffer(capacity=5, obs_dim=3, act_dim=2, device="cpu")
    buffer.add(*rows(0, 7))
    state = buffer.state_dict()
    restored = TensorBuffer(capacity=5, obs_dim=3, act_dim=2, device="cpu")
    restored.load_state_dict(state)
    buffer.add(*rows(7, 2))
    restored.add(*rows(7, 2))
    for name in ("observations", "actions", "rewards", "next_observations", "dones"):
        assert torch.equal(getattr(buffer, name), getattr(restored, name))
    assert restored.size == buffer.size == 5
    with pytest.raises(ValueError, match="same sizes"):
        TensorBuffer(capacity=6, obs_dim=3, act_dim=2, device="cpu").load_state_dict(state)


def test_from_dataset_uses_terminals_not_timeouts_as_dones():
    class Dataset:
        observations = np.zeros((4, 3), np.float32)
        actions = np.zeros((4, 2), np.float32)
        rewards = np.arange(4, dtype=np.float32)
        next_observations = np.ones((4, 3), np.float32)
        terminals = np.array([False, True, False, False])
        timeouts = np.array([False, False, False, True])

    buffer = TensorBuffer.from_dataset(Dataset(), "cpu")
    assert buffer.dones.tolist() == [0.0, 1.0, 0.0, 0.0]


def test_dataset_rows_become_a_batch_in_one_place():
    """transition_arrays is what TensorBuffer.from_dataset and Batch.from_dataset (the world model's and the
    ensemble's held-out rows, the guidance sweep) are built from: the same rows, in the order given."""
    class Dataset:
        observations = np.arange(15, dtype=np.float64).reshape(5, 3)  # float64 in: float32 out
        actions = np.zeros((5, 2), np.float32)
        rewards = np.arange(5, dtype=np.float32)
        next_observations = np.ones((5, 3), np.float32)
        terminals = np.array([False, True, False, True, False])

    rows = np.array([3, 0, 1])
    arrays = transition_arrays(Dataset(), rows)
    assert [a.dtype for a in arrays] == [np.float32] * 5 and arrays[2].tolist() == [3.0, 0.0, 1.0]
    batch = Batch.from_dataset(Dataset(), "cpu", indices=rows)
    assert batch.rewards.tolist() == [3.0, 0.0, 1.0] and batch.dones.tolist() == [1.0, 0.0, 1.0]
    assert batch.observations.dtype == torch.float32 and batch.observations[0].tolist() == [9.0, 10.0, 11.0]
    buffer = TensorBuffer.from_dataset(Dataset(), "cpu", indices=rows)
    assert all(torch.equal(a, b) for a, b in zip(buffer.batch_at(torch.arange(3)), batch))
    assert len(Batch.from_dataset(Dataset()).rewards) == 5


def filled(start: int, count: int, capacity: int | None = None) -> TensorBuffer:
    buffer = TensorBuffer(capacity or count, 3, 2, "cpu")
    buffer.add(*rows(start, count))
    return buffer


def real_share(sampler: MixedSampler, real_ids_below: int, draws: int = 50) -> float:
    shares = [(sampler.sample().rewards < real_ids_below).float().mean().item() for _ in range(draws)]
    return float(np.mean(shares))


def test_fraction_rule_draws_the_requested_real_fraction():
    real, synthetic = filled(0, 100), filled(1000, 5)
    sampler = MixedSampler(real, synthetic, batch_size=200, rule="fraction", real_fraction=0.25,
                           generator=torch.Generator().manual_seed(0))
    batch = sampler.sample()
    assert (batch.rewards < 1000).sum().item() == 50  # exactly round(0.25 * 200) rows from D
    # each part is a uniform draw from its own buffer
    assert set(batch.rewards[batch.rewards >= 1000].long().tolist()) <= set(range(1000, 1005))


def test_uniform_rule_is_proportional_to_buffer_sizes():
    real, synthetic = filled(0, 300), filled(1000, 100, capacity=200)
    sampler = MixedSampler(real, synthetic, batch_size=1000, rule="uniform",
                           generator=torch.Generator().manual_seed(0))
    assert real_share(sampler, 1000) == pytest.approx(0.75, abs=0.01)  # 300 / 400; sd of the mean 0.002
    synthetic.add(*rows(1100, 100))  # |D-hat| grows to 200: share follows without any host sync
    assert real_share(sampler, 1000) == pytest.approx(0.6, abs=0.01)
    batch = sampler.sample()
    # rows stay intact when merged from the two buffers
    assert torch.equal(batch.observations[:, 0], batch.rewards)
    assert torch.equal(batch.next_observations[:, 0], batch.rewards + 0.5)


def test_empty_or_missing_synthetic_buffer_falls_back_to_real_data():
    real = filled(0, 50)
    for synthetic in (None, TensorBuffer(10, 3, 2, "cpu")):
        for rule in ("uniform", "fraction"):
            sampler = MixedSampler(real, synthetic, 64, rule=rule, generator=torch.Generator().manual_seed(0))
            assert (sampler.sample().rewards < 50).all()


def test_sampler_rejects_bad_settings():
    real = filled(0, 5)
    with pytest.raises(ValueError, match="valid rules"):
        MixedSampler(real, None, 8, rule="mixed")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MixedSampler(real, None, 8, rule="fraction", real_fraction=1.5)
