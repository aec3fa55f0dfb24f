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


class Batch(NamedTuple):
    """A batch of transitions, float32 tensors on one device. `dones` are terminals (never timeouts):
    the learner does not bootstrap from `next_observations` where dones == 1."""

    observations: torch.Tensor       # (B, obs_dim)
    actions: torch.Tensor            # (B, act_dim), in [-1, 1]
    rewards: torch.Tensor            # (B,)
    next_observations: torch.Tensor  # (B, obs_dim)
    dones: torch.Tensor              # (B,)


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
        rows = slice(None) if indices is None else indices
        return cls.from_arrays(dataset.observations[rows], dataset.actions[rows], dataset.rewards[rows],
                               dataset.next_observations[rows], dataset.terminals[rows], device, capacity)

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


class MixedSampler:
    """Learner batches from the real buffer D and the synthetic buffer D-hat.

    rule="uniform": every transition of D ∪ D-hat is equally likely (Algorithm 1 samples the batch
    from D ∪ D-hat), so the real share of a batch follows |D| / (|D| + |D-hat|).
    rule="fraction": a fixed round(real_fraction * batch_size) rows from D, the rest from D-hat.
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
        self.real_count = round(real_fraction * batch_size)  # rows from D under rule="fraction"
        self.generator = generator if generator is not None else torch.Generator(device=real.device)

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
