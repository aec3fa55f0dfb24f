"""Parts shared by every learner: networks, policy heads, data statistics, target updates, the
learner base class (checkpointing, acting, seeding) and the hyperparameters all learners share."""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adept.config import require
from baselines.compile import COMPILE_MODES, compile_step, should_compile
from baselines.cpu_gemm import Linear, ensemble_linear

# Tanh-squashed policies evaluate log pi(a|s) at atanh(a). Actions are clamped to
# [-1 + eps, 1 - eps] first so that |a| = 1 (D4RL stores some actions exactly at the bound, and
# float32 tanh saturates to 1.0 for |u| > 9) gives a finite density. With eps = 1e-5, |u| <= 6.1 and
# 1 - |a| keeps three significant digits in float32 (its spacing near 1 is 6e-8).
ACTION_CLAMP_EPS = 1e-5

# IQL scales locomotion rewards by 1000 / (max episode return - min episode return); 1000 is the
# episode length of the MuJoCo locomotion tasks.
LOCOMOTION_EPISODE_STEPS = 1000
REWARD_NORMALIZATIONS = ("none", "return_range")


def mlp(in_dim: int, out_dim: int, hidden_dim: int = 256, depth: int = 2,
        activation: type[nn.Module] = nn.ReLU, layer_norm: bool = False) -> nn.Sequential:
    """`depth` hidden layers of width `hidden_dim`, then a linear output layer (nn.Linear layers whose
    CPU products may go through oneDNN, baselines/cpu_gemm.py)."""
    if depth < 0:
        raise ValueError(f"mlp depth must be >= 0, got {depth}")
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(depth):
        layers.append(Linear(width, hidden_dim))
        if layer_norm:
            layers.append(nn.LayerNorm(hidden_dim))
        layers.append(activation())
        width = hidden_dim
    layers.append(Linear(width, out_dim))
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------
# Data statistics
# ----------------------------------------------------------------------------------------------
@dataclass
class DataStats:
    """Normalization computed once from the offline data and applied inside learners.

    Learners see raw observations and rewards everywhere (offline batches, synthetic batches,
    evaluation, rollouts) and normalize internally, so every path uses the same transform.
    `reward_scale`/`reward_shift` map r -> r * reward_scale + reward_shift.
    """

    obs_mean: np.ndarray
    obs_std: np.ndarray
    reward_scale: float = 1.0
    reward_shift: float = 0.0
    act_mean: np.ndarray | None = None   # per-dimension action statistics, for learners that normalize
    act_std: np.ndarray | None = None    # actions (Diffuser); None: actions are used as they are

    @classmethod
    def identity(cls, obs_dim: int) -> "DataStats":
        return cls(np.zeros(obs_dim, np.float32), np.ones(obs_dim, np.float32))

    @classmethod
    def compute(cls, observations: np.ndarray, episode_returns: np.ndarray | None = None, *,
                normalize_obs: bool = True, reward_normalization: str = "none",
                obs_std_eps: float = 1e-3, actions: np.ndarray | None = None) -> "DataStats":
        """Statistics from numpy arrays.

        normalize_obs: per-dimension mean and std (+ `obs_std_eps`, as TD3+BC and CORL) of `observations`.
        reward_normalization: "none", or "return_range" = IQL's locomotion scaling
            r * 1000 / (max episode return - min episode return); needs `episode_returns`.
        actions: if given, their per-dimension mean and std (+ `obs_std_eps`) become act_mean/act_std.
        """
        observations = np.asarray(observations)
        if observations.ndim != 2 or len(observations) == 0:
            raise ValueError(f"observations must be a non-empty (N, obs_dim) array, got shape {observations.shape}")
        if reward_normalization not in REWARD_NORMALIZATIONS:
            raise ValueError(f"unknown reward_normalization {reward_normalization!r}; "
                             f"valid ones are {list(REWARD_NORMALIZATIONS)}")
        obs_dim = observations.shape[1]
        stats = cls.identity(obs_dim)
        if normalize_obs:
            obs64 = observations.astype(np.float64)
            stats.obs_mean = obs64.mean(axis=0).astype(np.float32)
            stats.obs_std = (obs64.std(axis=0) + obs_std_eps).astype(np.float32)
        if reward_normalization == "return_range":
            if episode_returns is None or len(episode_returns) < 2:
                raise ValueError("reward_normalization='return_range' needs the returns of at least two "
                                 "episodes; use reward_normalization='none' for this data")
            spread = float(np.max(episode_returns) - np.min(episode_returns))
            if not spread > 0:
                raise ValueError(f"reward_normalization='return_range': all {len(episode_returns)} episodes "
                                 f"have the same return ({float(episode_returns[0])}); use 'none'")
            stats.reward_scale = LOCOMOTION_EPISODE_STEPS / spread
        if actions is not None:
            act64 = np.asarray(actions, np.float64)
            stats.act_mean = act64.mean(axis=0).astype(np.float32)
            stats.act_std = (act64.std(axis=0) + obs_std_eps).astype(np.float32)
        return stats

    @classmethod
    def from_dataset(cls, dataset: Any, *, normalize_obs: bool = True,
                     reward_normalization: str = "none", normalize_actions: bool = False) -> "DataStats":
        """Statistics of an `adept.data.OfflineDataset` (its episodes split by `episode_returns()`)."""
        returns = dataset.episode_returns() if reward_normalization != "none" else None
        return cls.compute(dataset.observations, returns, normalize_obs=normalize_obs,
                           reward_normalization=reward_normalization,
                           actions=dataset.actions if normalize_actions else None)

    def to_dict(self) -> dict:
        values = {"obs_mean": np.asarray(self.obs_mean, np.float32).tolist(),
                  "obs_std": np.asarray(self.obs_std, np.float32).tolist(),
                  "reward_scale": float(self.reward_scale), "reward_shift": float(self.reward_shift)}
        if self.act_mean is not None:
            values.update(act_mean=np.asarray(self.act_mean, np.float32).tolist(),
                          act_std=np.asarray(self.act_std, np.float32).tolist())
        return values

    @classmethod
    def from_dict(cls, d: dict) -> "DataStats":
        actions = {key: np.asarray(d[key], np.float32) for key in ("act_mean", "act_std") if d.get(key) is not None}
        return cls(np.asarray(d["obs_mean"], np.float32), np.asarray(d["obs_std"], np.float32),
                   float(d["reward_scale"]), float(d["reward_shift"]), **actions)


class Normalizer(nn.Module):
    """DataStats as device buffers: raw observations/rewards in, normalized out."""

    def __init__(self, stats: DataStats):
        super().__init__()
        self.register_buffer("obs_mean", torch.as_tensor(np.asarray(stats.obs_mean, np.float32)))
        self.register_buffer("obs_std", torch.as_tensor(np.asarray(stats.obs_std, np.float32)))
        self.reward_scale = float(stats.reward_scale)
        self.reward_shift = float(stats.reward_shift)
        self.has_action_stats = stats.act_mean is not None
        if self.has_action_stats:
            self.register_buffer("act_mean", torch.as_tensor(np.asarray(stats.act_mean, np.float32)))
            self.register_buffer("act_std", torch.as_tensor(np.asarray(stats.act_std, np.float32)))

    def observations(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalized actions (the identity without action statistics)."""
        return (actions - self.act_mean) / self.act_std if self.has_action_stats else actions

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return actions * self.act_std + self.act_mean if self.has_action_stats else actions

    def rewards(self, rewards: torch.Tensor) -> torch.Tensor:
        return rewards * self.reward_scale + self.reward_shift


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
class EnsembleLinear(nn.Module):
    """`ensemble_size` independent linear layers evaluated with one batched matmul."""

    def __init__(self, in_features: int, out_features: int, ensemble_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features))
        # nn.Linear's default initialization, U(-1/sqrt(in), 1/sqrt(in)), for every member.
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, in) shared by all members, or (E, B, in) per member -> (E, B, out)
        return ensemble_linear(x, self.weight, self.bias)


class CriticEnsemble(nn.Module):
    """`num_critics` Q-networks Q_i(s, a) (twin Q: 2) stacked into one network: (B,) inputs -> (E, B).

    One batched matmul per layer instead of one matmul per critic halves the kernel launches of
    twin-Q learners (see docs/notes/learners.md for the measurement)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int, depth: int, num_critics: int = 2):
        super().__init__()
        widths = [obs_dim + act_dim] + [hidden_dim] * depth + [1]
        self.layers = nn.ModuleList(EnsembleLinear(w_in, w_out, num_critics)
                                    for w_in, w_out in zip(widths[:-1], widths[1:]))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, actions], dim=-1)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x).squeeze(-1)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag(exp(log_std)^2)) summed over the last dimension."""
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def tanh_log_det_jacobian(u: torch.Tensor) -> torch.Tensor:
    """log |d tanh(u) / du| = log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), summed; stable for large |u|."""
    return (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)


def _noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, device=like.device, dtype=like.dtype, generator=generator)


class TanhGaussianActor(nn.Module):
    """a = tanh(u), u ~ N(mu(s), sigma(s)^2) with a learned state-dependent std (SAC, CQL, BC).

    The log-std is squashed smoothly into [log_std_min, log_std_max] (tanh rescaling) rather than
    clamped, so it keeps a gradient at the bounds."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int, depth: int,
                 log_std_min: float = -5.0, log_std_max: float = 2.0):
        super().__init__()
        self.net = mlp(obs_dim, 2 * act_dim, hidden_dim, depth)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw_log_std = self.net(obs).chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw_log_std) + 1)
        return mean, log_std

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized sample and its log-density: (actions (B, act_dim), log_prob (B,))."""
        mean, log_std = self(obs)
        u = mean + torch.exp(log_std) * _noise(mean, generator)
        log_prob = gaussian_log_prob(u, mean, log_std) - tanh_log_det_jacobian(u)
        return torch.tanh(u), log_prob

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        mean, log_std = self(obs)
        u = torch.atanh(actions.clamp(-1 + ACTION_CLAMP_EPS, 1 - ACTION_CLAMP_EPS))
        return gaussian_log_prob(u, mean, log_std) - tanh_log_det_jacobian(u)

    def act(self, obs: torch.Tensor, deterministic: bool, generator: torch.Generator | None) -> torch.Tensor:
        if deterministic:
            return torch.tanh(self(obs)[0])
        return self.sample(obs, generator)[0]


class GaussianActor(nn.Module):
    """IQL's policy: N(tanh(mu(s)), sigma^2) with a state-independent learned log-std, no squashing.

    Its density is that of the unclipped Gaussian; sampled actions are clipped to [-1, 1] as in IQL."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int, depth: int,
                 log_std_min: float = -5.0, log_std_max: float = 2.0):
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden_dim, depth)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(self.net(obs)), self.log_std.clamp(self.log_std_min, self.log_std_max)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        mean, log_std = self(obs)
        return gaussian_log_prob(actions, mean, log_std)

    def act(self, obs: torch.Tensor, deterministic: bool, generator: torch.Generator | None) -> torch.Tensor:
        mean, log_std = self(obs)
        if deterministic:
            return mean
        return (mean + torch.exp(log_std) * _noise(mean, generator)).clamp(-1.0, 1.0)


class DeterministicActor(nn.Module):
    """TD3's policy a = tanh(mu(s)). A deterministic policy has no density; for importance weights
    and stochastic acting it is treated as N(mu(s), noise_std^2) clipped to [-1, 1] (TD3's
    exploration noise)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int, depth: int, noise_std: float):
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden_dim, depth)
        self.noise_std = noise_std

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        mean = self(obs)
        return gaussian_log_prob(actions, mean, torch.full_like(mean, math.log(self.noise_std)))

    def act(self, obs: torch.Tensor, deterministic: bool, generator: torch.Generator | None) -> torch.Tensor:
        mean = self(obs)
        if deterministic:
            return mean
        return (mean + self.noise_std * _noise(mean, generator)).clamp(-1.0, 1.0)


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Inside the block `module`'s parameters take no gradient: losses that only train another
    network through it (actor losses through a critic) skip its weight gradients."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging target <- (1 - tau) * target + tau * source, fused over all parameters."""
    target_params = list(target.parameters())
    source_params = list(source.parameters())
    torch._foreach_lerp_(target_params, source_params, tau)


# The fused Adam kernel exists on CUDA, and on the CPU from torch 2.4 (7% more IQL updates/s on the CPU,
# docs/notes/learners.md).
_FUSED_ADAM_ON_CPU = torch.__version__ >= "2.4"


def adam(params, lr: float | torch.Tensor, device: torch.device, compiled: bool = False) -> torch.optim.Adam:
    """Adam with the fused kernel (one launch for all parameters on GPUs) where available. Compiled steps
    get the plain implementation, which torch.compile traces and fuses itself (it does not trace the
    fused kernel); on CUDA the capturable foreach one, whose step counts stay on the device."""
    if compiled:
        cuda = device.type == "cuda"
        return torch.optim.Adam(params, lr=lr, foreach=cuda, capturable=cuda)
    fused = device.type == "cuda" or (device.type == "cpu" and _FUSED_ADAM_ON_CPU)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


ADAM_IMPLEMENTATION_KEYS = ("foreach", "fused", "capturable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """`optimizer.load_state_dict(state)` that keeps the optimizer's own implementation (fused, foreach,
    capturable): a state saved by an eager step resumes in a compiled one, and back."""
    own = [{key: group[key] for key in ADAM_IMPLEMENTATION_KEYS if key in group} for group in optimizer.param_groups]
    groups = [{**saved, **mine} for saved, mine in zip(state["param_groups"], own)]
    optimizer.load_state_dict({**state, "param_groups": groups})


# ----------------------------------------------------------------------------------------------
# Learner base class
# ----------------------------------------------------------------------------------------------
@dataclass
class LearnerConfig:
    """Hyperparameters every learner has (Table 3 of the ADEPT paper: batch 256, hidden 256)."""

    seed: int | None = None            # None: drawn from torch's global RNG (seeded by the runner)
    batch_size: int = 256              # read by whoever samples batches for update()
    hidden_dim: int = 256
    depth: int = 2                     # hidden layers per network
    normalize_obs: bool = True         # the ADEPT paper normalizes states to zero mean, unit std
    reward_normalization: Literal["none", "return_range"] = "none"
    # Compile the update step (baselines/compile.py): "auto" where measured faster and tested equal;
    # true/false (older configs, YAML's on/off) mean "on"/"off". The runner sets it from run.compile.
    compile: Literal["off", "on", "auto"] | bool = "auto"

    def validate(self) -> None:
        require(self.seed is None or self.seed >= 0, f"seed must be >= 0 or null, got {self.seed}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.hidden_dim >= 1, f"hidden_dim must be >= 1, got {self.hidden_dim}")
        require(self.depth >= 1, f"depth must be >= 1 (hidden layers), got {self.depth}")
        require(isinstance(self.compile, bool) or self.compile in COMPILE_MODES,
                f"compile must be one of {list(COMPILE_MODES)}, got {self.compile!r}")
        require(self.reward_normalization in REWARD_NORMALIZATIONS,
                f"reward_normalization must be one of {list(REWARD_NORMALIZATIONS)}, "
                f"got {self.reward_normalization!r}")


def require_in(name: str, value: float, low: float, high: float, *, low_open: bool = False,
               high_open: bool = False) -> None:
    """ConfigError unless `value` lies in the interval; the message states the valid range."""
    ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    require(ok, f"{name} must be in {interval}, got {value}")


class OfflineLearner:
    """What every learner shares: normalization, its own random generator, acting, checkpoints.

    Subclasses set `name` (the registry key) and `label` (the display name), build their networks and optimizers in `_build()` and list every piece
    of state in `checkpointed` (modules, optimizers or tensors, by attribute name);
    `actor` must provide `act(obs, deterministic, generator)` and `log_prob(obs, actions)`.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    checkpointed: tuple[str, ...] = ()

    def __init__(self, obs_dim: int, act_dim: int, config: LearnerConfig, device: str | torch.device,
                 stats: DataStats | None = None):
        config.validate()
        self.obs_dim, self.act_dim, self.config = obs_dim, act_dim, config
        self.device = torch.device(device)
        self.stats = stats if stats is not None else DataStats.identity(obs_dim)
        if np.shape(self.stats.obs_mean) != (obs_dim,) or np.shape(self.stats.obs_std) != (obs_dim,):
            raise ValueError(f"DataStats has obs_mean/obs_std of shape {np.shape(self.stats.obs_mean)}/"
                             f"{np.shape(self.stats.obs_std)}, but obs_dim is {obs_dim}")
        self.normalizer = Normalizer(self.stats).to(self.device)
        seed = config.seed if config.seed is not None else int(torch.randint(0, 2**62, ()).item())
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.num_updates = 0
        self.compiled = should_compile(config.compile, self.device)
        # Networks are initialized from `seed` alone, whatever the state of the global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._build()
        # The plain function, called with the learner: deep copies of the learner then call it with themselves.
        self._step = compile_step(type(self)._update_step, self.compiled, self.device)

    def adam(self, params, lr: float | torch.Tensor) -> torch.optim.Adam:
        """An Adam optimizer on the learner's device, of the kind its (eager or compiled) step runs fastest."""
        return adam(params, lr, self.device, self.compiled)

    def _build(self) -> None:
        raise NotImplementedError

    def _update_step(self, obs, actions, rewards, next_obs, dones) -> dict[str, torch.Tensor]:
        """One gradient step on normalized tensors; returns detached scalar metrics."""
        raise NotImplementedError

    def _normalized(self, batch) -> tuple[torch.Tensor, ...]:
        """(obs, actions, rewards, next_obs, dones) with observations and rewards normalized."""
        normalize = self.normalizer
        return (normalize.observations(batch.observations), batch.actions, normalize.rewards(batch.rewards),
                normalize.observations(batch.next_observations), batch.dones)

    def update(self, batch) -> dict[str, torch.Tensor]:
        """One gradient step on a Batch of raw transitions; metrics are scalar tensors (no host sync)."""
        metrics = self._step(self, *self._normalized(batch))
        self.num_updates += 1
        return metrics

    def segment_sampler_options(self) -> dict | None:
        """None: update() takes transitions (a Batch from the runner's MixedSampler). A learner of
        trajectory segments (Diffuser) returns the options of baselines.replay.SegmentSampler it needs
        (length, discount, terminal_reward, pad, max_episode_steps); update() then takes SegmentBatch."""
        return None

    def _as_obs(self, obs) -> torch.Tensor:
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if obs.shape[-1] != self.obs_dim:
            raise ValueError(f"{self.name}: observations have last dimension {obs.shape[-1]}, expected {self.obs_dim}")
        return obs

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions in [-1, 1] for raw observations (B, obs_dim); stochastic ones use `generator`
        (default: the learner's own)."""
        obs = self._as_obs(obs)
        return self.actor.act(self.normalizer.observations(obs), deterministic, generator or self.generator)

    @torch.no_grad()
    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s), shape (B,), for raw observations and actions in [-1, 1] (no gradient)."""
        obs = self._as_obs(obs)
        actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        return self.actor.log_prob(self.normalizer.observations(obs), actions)

    def state_dict(self) -> dict:
        """Everything to resume training (the normalization is not: it is an input, like obs_dim).
        Module and optimizer entries reference live tensors (as torch's own state_dicts do): save them
        right away or `copy.deepcopy` to keep a snapshot."""
        state: dict[str, Any] = {"num_updates": self.num_updates, "generator": self.generator.get_state()}
        for key in self.checkpointed:
            value = getattr(self, key)
            state[key] = value.detach().clone() if isinstance(value, torch.Tensor) else value.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        missing = sorted(set(self.checkpointed) - set(state))
        if missing:
            raise ValueError(f"{self.name}: state dict lacks {missing}; was it saved by another learner?")
        for key in self.checkpointed:
            value = getattr(self, key)
            if isinstance(value, torch.Tensor):
                with torch.no_grad():
                    value.copy_(state[key])
            elif isinstance(value, torch.optim.Optimizer):
                load_optimizer_state(value, state[key])
            else:
                value.load_state_dict(state[key])
        self.generator.set_state(state["generator"].cpu())
        self.num_updates = int(state["num_updates"])
