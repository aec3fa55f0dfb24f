"""Device-resident transition storage: the offline data D, the synthetic buffer D-hat, and the
sampler that draws learner batches from D ∪ D-hat.

Everything stays on the training device. Buffer sizes are Python ints updated on `add`, so
sampling never reads a value back from the GPU.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

FIELDS = ("observations", "actions", "rewards", "next_observations", "dones")


def transition_arrays(dataset: Any, indices: np.ndarray | None = None) -> list[np.ndarray]:
    """The Batch fields of an `adept.data.OfflineDataset`'s transitions (those at `indices`) as float32
    arrays; dones = terminals (timeouts bootstrap). The one place dataset rows become a batch."""
    rows = slice(None) if indices is None else indices
    return [np.asarray(getattr(dataset, name)[rows], np.float32)
            for name in ("observations", "actions", "rewards", "next_observations", "terminals")]


class Batch(NamedTuple):
    """A batch of transitions, float32 tensors on one device. `dones` are terminals (never timeouts):
    the learner does not bootstrap from `next_observations` where dones == 1."""

    observations: torch.Tensor       # (B, obs_dim)
    actions: torch.Tensor            # (B, act_dim), in [-1, 1]
    rewards: torch.Tensor            # (B,)
    next_observations: torch.Tensor  # (B, obs_dim)
    dones: torch.Tensor              # (B,)

    @classmethod
    def from_dataset(cls, dataset: Any, device: str | torch.device = "cpu",
                     indices: np.ndarray | None = None) -> "Batch":
        """The transitions of an OfflineDataset (or those at `indices`) as one batch on `device`."""
        return cls(*(torch.as_tensor(x, device=device) for x in transition_arrays(dataset, indices)))


class TensorBuffer:
    """Preallocated ring buffer of transitions on `device`; the oldest rows are overwritten when full."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: str | torch.device):
        if capacity < 1 or obs_dim < 1 or act_dim < 1:
            raise ValueError(f"TensorBuffer needs capacity, obs_dim and act_dim >= 1, "
                             f"got {capacity}, {obs_dim}, {act_dim}")
        self.capacity, self.obs_dim, self.act_dim = capacity, obs_dim, act_dim
        self.device = torch.device(device)
        options = {"dtype": torch.float32, "device": self.device}
        self.observations = torch.zeros(capacity, obs_dim, **options)
        self.actions = torch.zeros(capacity, act_dim, **options)
        self.rewards = torch.zeros(capacity, **options)
        self.next_observations = torch.zeros(capacity, obs_dim, **options)
        self.dones = torch.zeros(capacity, **options)
        self._size = 0
        self._position = 0  # next row to write

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    @classmethod
    def from_arrays(cls, observations, actions, rewards, next_observations, dones,
                    device: str | torch.device, capacity: int | None = None) -> "TensorBuffer":
        """A buffer holding the given transitions (numpy arrays or tensors), copied to `device` once."""
        n, obs_dim = np.shape(observations)
        buffer = cls(capacity or n, obs_dim, np.shape(actions)[1], device)
        buffer.add(observations, actions, rewards, next_observations, dones)
        return buffer

    @classmethod
    def from_dataset(cls, dataset: Any, device: str | torch.device, capacity: int | None = None,
                     indices: np.ndarray | None = None) -> "TensorBuffer":
        """The transitions of an `adept.data.OfflineDataset` (or those at `indices`); dones = terminals
        (timeouts bootstrap)."""
        return cls.from_arrays(*transition_arrays(dataset, indices), device, capacity)

    def add(self, observations, actions, rewards, next_observations, dones) -> None:
        """Append a batch of n transitions; when full, overwrite the oldest rows."""
        new = [torch.as_tensor(x, dtype=torch.float32, device=self.device)
               for x in (observations, actions, rewards, next_observations, dones)]
        n = new[0].shape[0]
        expected = ((n, self.obs_dim), (n, self.act_dim), (n,), (n, self.obs_dim), (n,))
        for name, tensor, shape in zip(FIELDS, new, expected):
            if tuple(tensor.shape) != shape:
                raise ValueError(f"TensorBuffer.add: {name} has shape {tuple(tensor.shape)}, expected {shape}")
        if n == 0:
            return
        if n > self.capacity:  # only the newest `capacity` rows survive
            new = [x[n - self.capacity:] for x in new]
            n = self.capacity
        first = min(n, self.capacity - self._position)
        for name, tensor in zip(FIELDS, new):
            storage = getattr(self, name)
            storage[self._position:self._position + first] = tensor[:first]
            if first < n:  # wrap around to the start
                storage[:n - first] = tensor[first:]
        self._position = (self._position + n) % self.capacity
        self._size = min(self._size + n, self.capacity)

    def batch_at(self, indices: torch.Tensor) -> Batch:
        return Batch(*(getattr(self, name)[indices] for name in FIELDS))

    def _random_indices(self, count: int, generator: torch.Generator | None) -> torch.Tensor:
        if self._size == 0:
            raise ValueError("cannot sample from an empty TensorBuffer; add transitions first")
        return torch.randint(0, self._size, (count,), device=self.device, generator=generator)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """`batch_size` transitions drawn uniformly with replacement (generator on the buffer's device)."""
        return self.batch_at(self._random_indices(batch_size, generator))

    def sample_observations(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`count` observations drawn uniformly with replacement (e.g. rollout start states)."""
        return self.observations[self._random_indices(count, generator)]

    def state_dict(self) -> dict:
        """The stored rows (copied to the CPU) and the write position."""
        state: dict[str, Any] = {"capacity": self.capacity, "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                                 "size": self._size, "position": self._position}
        for name in FIELDS:
            state[name] = getattr(self, name)[:self._size].to("cpu", copy=True)
        return state

    def load_state_dict(self, state: dict) -> None:
        saved = (state["capacity"], state["obs_dim"], state["act_dim"])
        if saved != (self.capacity, self.obs_dim, self.act_dim):
            raise ValueError(f"buffer state has (capacity, obs_dim, act_dim) = {saved}, this buffer has "
                             f"{(self.capacity, self.obs_dim, self.act_dim)}; create it with the same sizes")
        size = int(state["size"])
        for name in FIELDS:
            getattr(self, name)[:size] = state[name].to(self.device)
        self._size, self._position = size, int(state["position"])


def fraction_real_rows(batch_size: int, real_fraction: float) -> int:
    """Rows of a batch drawn from D under the "fraction" rule (they come first in the batch)."""
    return round(real_fraction * batch_size)


class MixedSampler:
    """Learner batches from the real buffer D and the synthetic buffer D-hat.

    rule="uniform": every transition of D ∪ D-hat is equally likely (Algorithm 1 samples the batch
    from D ∪ D-hat), so the real share of a batch follows |D| / (|D| + |D-hat|).
    rule="fraction": a fixed round(real_fraction * batch_size) rows from D, the rest from D-hat, D's
    rows first: `real_rows` is the split point of every batch (learners that treat real and
    synthetic rows differently, e.g. COMBO, read it; the runner passes it as learner.real_rows).
    While D-hat is empty (or None) every batch comes from D.
    """

    RULES = ("uniform", "fraction")

    def __init__(self, real: TensorBuffer, synthetic: TensorBuffer | None, batch_size: int,
                 rule: str = "uniform", real_fraction: float = 0.5, generator: torch.Generator | None = None):
        if rule not in self.RULES:
            raise ValueError(f"unknown mixing rule {rule!r}; valid rules are {list(self.RULES)}")
        if not 0.0 <= real_fraction <= 1.0:
            raise ValueError(f"real_fraction must be in [0, 1], got {real_fraction}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if synthetic is not None and synthetic.device != real.device:
            raise ValueError(f"real buffer on {real.device} and synthetic buffer on {synthetic.device}: "
                             f"put both on the same device")
        self.real, self.synthetic = real, synthetic
        self.batch_size, self.rule = batch_size, rule
        self.real_count = fraction_real_rows(batch_size, real_fraction)  # rows from D under rule="fraction"
        self.generator = generator if generator is not None else torch.Generator(device=real.device)

    @property
    def real_rows(self) -> int | None:
        """Rows 0..real_rows-1 of the next batch come from D, the rest from D-hat (rule "fraction");
        None under rule "uniform", whose real rows are scattered."""
        if self.synthetic is None or self.synthetic.size == 0:
            return self.batch_size
        return self.real_count if self.rule == "fraction" else None

    def sample(self) -> Batch:
        real, synthetic, generator = self.real, self.synthetic, self.generator
        if synthetic is None or synthetic.size == 0:
            return real.sample(self.batch_size, generator)
        if self.rule == "fraction":
            if self.real_count == self.batch_size:
                return real.sample(self.batch_size, generator)
            if self.real_count == 0:
                return synthetic.sample(self.batch_size, generator)
            parts = (real.sample(self.real_count, generator),
                     synthetic.sample(self.batch_size - self.real_count, generator))
            return Batch(*(torch.cat(pair) for pair in zip(*parts)))
        # Uniform over the union: one index in [0, |D| + |D-hat|), rows below |D| come from D. Both
        # buffers are gathered and merged with `where`, which keeps shapes static (no host sync).
        index = torch.randint(0, real.size + synthetic.size, (self.batch_size,), device=real.device,
                              generator=generator)
        from_real = index < real.size
        real_rows = real.batch_at(index.clamp(max=real.size - 1))
        synthetic_rows = synthetic.batch_at((index - real.size).clamp(min=0))
        return Batch(*(torch.where(from_real.view(-1, *([1] * (r.dim() - 1))), r, s)
                       for r, s in zip(real_rows, synthetic_rows)))


# ---------------------------------------------------------------------------------------------------
# Trajectory segments: learners that model sequences of steps (Diffuser) instead of transitions
# ---------------------------------------------------------------------------------------------------
class SegmentBatch(NamedTuple):
    """`length` consecutive steps of one episode per row, float32 tensors on one device. Steps past the
    episode's end are padding: zeros in observations, actions and rewards, and 0 in `mask`."""

    observations: torch.Tensor   # (B, L, obs_dim)
    actions: torch.Tensor        # (B, L, act_dim)
    rewards: torch.Tensor        # (B, L)
    mask: torch.Tensor           # (B, L): 1 for steps of the episode, 0 for padding
    returns: torch.Tensor        # (B,): discounted return from the segment's first step to the episode's end


def discounted_returns(rewards: np.ndarray, episode_ends: np.ndarray, discount: float) -> np.ndarray:
    """R_t = sum_k discount^k r_{t+k} up to the end of t's episode (episode_ends[t] marks its last step)."""
    returns = np.zeros(len(rewards), np.float64)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + (0.0 if episode_ends[t] else discount * running)
        returns[t] = running
    return returns


class SegmentSampler:
    """Batches of trajectory segments (SegmentBatch) drawn uniformly from an OfflineDataset's episodes.

    pad=True (Diffuser's SequenceDataset with use_padding): a segment may run past its episode's end,
    the missing steps are zero padding; starts s of an episode of T steps satisfy
    s < min(T - 1, max_episode_steps - length), as in Diffuser. pad=False: whole segments only,
    s <= T - length. `returns` uses `discount`, with `terminal_reward` added to the reward of a step
    that ends its episode by termination (Diffuser's termination_penalty, -100); `rewards` are the
    dataset's. The arrays live on `device`; sampling never reads a value back to the host.
    """

    def __init__(self, dataset: Any, length: int, batch_size: int, *, device: str | torch.device,
                 generator: torch.Generator | None = None, discount: float = 1.0, terminal_reward: float = 0.0,
                 pad: bool = True, max_episode_steps: int = 1000):
        if length < 1 or batch_size < 1:
            raise ValueError(f"SegmentSampler needs length and batch_size >= 1, got {length}, {batch_size}")
        if not 0.0 <= discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {discount}")
        if pad and length > max_episode_steps:
            raise ValueError(f"segment length {length} exceeds max_episode_steps {max_episode_steps}")
        self.length, self.batch_size, self.device = length, batch_size, torch.device(device)
        n = len(dataset.rewards)
        starts = np.asarray(dataset.episode_starts, np.int64)
        lengths = np.diff(np.append(starts, n))
        counts = (np.maximum(0, np.minimum(lengths - 1, max_episode_steps - length)) if pad
                  else np.maximum(0, lengths - length + 1))
        if counts.sum() == 0:
            longest = int(lengths.max())
            raise ValueError(f"no episode of the {dataset.env}-{dataset.dataset} data holds a segment of {length} "
                             f"steps (longest episode: {longest} steps{'' if pad else ', and pad=False'}); use a "
                             f"shorter horizon{'' if pad else ' or pad=True'}")
        first = np.repeat(starts, counts)
        offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        episode_end = np.repeat(starts + lengths, lengths)  # exclusive end of each row's episode
        rewards = np.asarray(dataset.rewards, np.float64)
        penalised = rewards + terminal_reward * np.asarray(dataset.terminals, np.float64)
        returns = discounted_returns(penalised, np.asarray(dataset.episode_ends), discount)
        options = {"device": self.device}
        self.observations = torch.as_tensor(np.asarray(dataset.observations, np.float32), **options)
        self.actions = torch.as_tensor(np.asarray(dataset.actions, np.float32), **options)
        self.rewards = torch.as_tensor(rewards.astype(np.float32), **options)
        self.returns = torch.as_tensor(returns.astype(np.float32), **options)
        self.episode_end = torch.as_tensor(episode_end, **options)
        self.starts = torch.as_tensor(first + offset, **options)   # every valid segment start
        self.offsets = torch.arange(length, **options)
        self.generator = generator if generator is not None else torch.Generator(device=self.device)

    @property
    def num_segments(self) -> int:
        return len(self.starts)

    def segments_at(self, starts: torch.Tensor) -> SegmentBatch:
        """The segments that begin at dataset rows `starts` (B,)."""
        rows = starts.unsqueeze(1) + self.offsets                       # (B, L)
        mask = rows < self.episode_end[starts].unsqueeze(1)
        rows = torch.where(mask, rows, starts.unsqueeze(1))             # padding reads a valid row, then zeroed
        weight = mask.float()
        return SegmentBatch(self.observations[rows] * weight.unsqueeze(-1), self.actions[rows] * weight.unsqueeze(-1),
                            self.rewards[rows] * weight, weight, self.returns[starts])

    def sample(self) -> SegmentBatch:
        index = torch.randint(0, len(self.starts), (self.batch_size,), device=self.device, generator=self.generator)
        return self.segments_at(self.starts[index])
