"""Diffuser (Janner et al. 2022, https://arxiv.org/abs/2205.09991): a diffusion model over whole
trajectories, used as a planner with a value function trained on noisy trajectories for guidance.
Settings: the authors' locomotion config (github.com/jannerm/diffuser, config/locomotion.py);
departures in docs/notes/diffusion-baselines.md.

  trajectory  x = [(a_0, s_0), ..., (a_{H-1}, s_{H-1})], per-dimension Gaussian-normalized actions and
              states; segments that run past their episode's end are zero-padded (raw units), as in Diffuser
  diffusion   x_k = sqrt(alpha_bar_k) x_0 + sqrt(1 - alpha_bar_k) eps, k ~ U{1..K}, cosine schedule
              (adept.diffusion); a temporal U-Net predicts x_0 (predict_epsilon = False). The first state
              is the condition: it is written into x_k and into the prediction (inpainting), so
                  loss = mean(w * (x0_hat - x_0)^2),  w = 1 except action_weight on a_0
  value       J(x_k, k) regresses the discounted return from s_0 to the episode's end (termination_penalty
              added at a terminal step) on noisy trajectories conditioned the same way: MSE
  planning    per state s, plan_samples trajectories from x_K ~ N(0, I) with s_0 = s; at every reverse step
              k > t_stopgrad, guide_steps times  x <- x + scale * Sigma_k * grad_x J(x, k)  (Sigma_k with
              scale_grad_by_std), then x_{k-1} ~ N(mu(x_k, x0_hat), Sigma_k) and s_0 = s again. The plan
              with the highest J (at k = 1) gives the action: its first one.
Both networks keep an EMA copy (decay ema_decay every ema_every updates, a plain copy before ema_start);
the copies are what plans, as in the Diffuser code. `update` takes trajectory segments
(baselines.replay.SegmentBatch, see `segment_sampler_options`); the value network stops training after
value_steps updates (Diffuser trains it 200k steps, the diffusion model 1M).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adept.config import require
from adept.diffusion import DiffusionSchedule, timestep_embedding
from baselines.common import LOCOMOTION_EPISODE_STEPS, LearnerConfig, OfflineLearner, require_in

GROUPS = 8  # GroupNorm groups of every convolution block (Diffuser's Conv1dBlock)


@dataclass
class DiffuserConfig(LearnerConfig):
    hidden_dim: int = 32                        # U-Net base channels ("dim"); level i has hidden_dim * dim_mults[i]
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    attention: bool = False                     # linear attention at every level (Diffuser: halfcheetah medium*)
    kernel_size: int = 5
    horizon: int = 32                           # H, steps per planned trajectory
    diffusion_steps: int = 20                   # K
    cosine_s: float = 0.008
    action_weight: float = 10.0                 # loss weight of the first action a_0
    lr: float = 2e-4                            # Adam, both networks
    batch_size: int = 64                        # Diffuser: 32 x 2 accumulated gradients per step
    ema_decay: float = 0.995
    ema_every: int = 10
    ema_start: int = 2000                       # updates before which the EMA copy is a plain copy
    value_steps: int | None = 200_000           # value-network updates (None: every update)
    discount: float = 0.997                     # of the value targets
    termination_penalty: float = -100.0         # added to the reward of a terminal step in the value targets
    plan_samples: int = 64                      # trajectories sampled per planning call and state
    guide_scale: float = 0.1
    guide_steps: int = 2                        # gradient steps on J per reverse step
    t_stopgrad: int = 2                         # no guidance at the last t_stopgrad reverse steps (k <= t_stopgrad)
    scale_grad_by_std: bool = True              # guidance gradient times Sigma_k
    normalize_actions: bool = True              # Gaussian normalization of actions too (Diffuser's normalizer)
    max_episode_steps: int = LOCOMOTION_EPISODE_STEPS  # no segment reaches past this step of an episode

    def validate(self) -> None:
        super().validate()
        levels = len(self.dim_mults)
        require(levels >= 1 and all(m >= 1 for m in self.dim_mults),
                f"dim_mults must be a non-empty list of integers >= 1, got {list(self.dim_mults)}")
        widths = [self.hidden_dim * m for m in self.dim_mults]
        require(all(w % GROUPS == 0 for w in widths) and (widths[-1] // 4) % GROUPS == 0,
                f"hidden_dim * dim_mults must be multiples of {GROUPS} (GroupNorm) and hidden_dim * dim_mults[-1] "
                f"a multiple of {4 * GROUPS} (the value head's last blocks), got widths {widths}")
        require(self.horizon >= 2 and self.horizon % 2 ** (levels - 1) == 0,
                f"horizon must be >= 2 and divisible by 2^(len(dim_mults) - 1) = {2 ** (levels - 1)} (the U-Net "
                f"halves it {levels - 1} times), got {self.horizon}")
        require(self.horizon <= self.max_episode_steps,
                f"horizon ({self.horizon}) must not exceed max_episode_steps ({self.max_episode_steps})")
        require(self.kernel_size >= 1 and self.kernel_size % 2 == 1, f"kernel_size must be odd, got {self.kernel_size}")
        require(self.diffusion_steps >= 1, f"diffusion_steps must be >= 1, got {self.diffusion_steps}")
        require_in("cosine_s", self.cosine_s, 0.0, 1.0, high_open=True)
        require_in("ema_decay", self.ema_decay, 0.0, 1.0)
        require_in("discount", self.discount, 0.0, 1.0)
        for key in ("lr", "action_weight"):
            require(getattr(self, key) > 0, f"{key} must be > 0, got {getattr(self, key)}")
        for key in ("ema_every", "plan_samples"):
            require(getattr(self, key) >= 1, f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("ema_start", "guide_steps", "t_stopgrad"):
            require(getattr(self, key) >= 0, f"{key} must be >= 0, got {getattr(self, key)}")
        require(self.value_steps is None or self.value_steps >= 0,
                f"value_steps must be >= 0 or null (train the value network at every update), got {self.value_steps}")
        require(self.guide_scale >= 0, f"guide_scale must be >= 0 (0: unguided sampling), got {self.guide_scale}")


# ---------------------------------------------------------------------------------------------- networks
class ConvBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish over (B, C, H)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = nn.GroupNorm(GROUPS, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.mish(self.norm(self.conv(x)))


class ResidualTemporalBlock(nn.Module):
    """Two conv blocks, the diffusion-step embedding added after the first, and a residual connection."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, kernel_size: int):
        super().__init__()
        self.first = ConvBlock(in_channels, out_channels, kernel_size)
        self.second = ConvBlock(out_channels, out_channels, kernel_size)
        self.step_proj = nn.Linear(embed_dim, out_channels)
        self.skip = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        out = self.first(x) + self.step_proj(F.mish(embedding)).unsqueeze(-1)
        return self.second(out) + self.skip(x)


class LinearAttention(nn.Module):
    """Residual linear attention over the time axis with a channel LayerNorm in front (Diffuser's
    Residual(PreNorm(LinearAttention)): 4 heads of 32 channels)."""

    def __init__(self, channels: int, heads: int = 4, head_dim: int = 32):
        super().__init__()
        self.heads, self.scale = heads, head_dim ** -0.5
        self.norm_gain = nn.Parameter(torch.ones(1, channels, 1))
        self.norm_bias = nn.Parameter(torch.zeros(1, channels, 1))
        self.to_qkv = nn.Conv1d(channels, 3 * heads * head_dim, 1, bias=False)
        self.to_out = nn.Conv1d(heads * head_dim, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = x.mean(dim=1, keepdim=True), x.var(dim=1, unbiased=False, keepdim=True)
        h = (x - mean) / (var + 1e-5).sqrt() * self.norm_gain + self.norm_bias
        batch, _, length = h.shape
        q, k, v = (t.reshape(batch, self.heads, -1, length) for t in self.to_qkv(h).chunk(3, dim=1))
        context = torch.einsum("bhdn,bhen->bhde", k.softmax(dim=-1), v)
        out = torch.einsum("bhde,bhdn->bhen", context, q * self.scale).reshape(batch, -1, length)
        return x + self.to_out(out)


class StepEmbedding(nn.Module):
    """Sinusoidal embedding of the diffusion step k -> Linear(4 dim) -> Mish -> Linear(dim)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.net = nn.Sequential(nn.Linear(dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim))

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        return self.net(timestep_embedding(k, self.dim))


def _level_widths(transition_dim: int, config: DiffuserConfig) -> list[tuple[int, int]]:
    widths = [transition_dim, *(config.hidden_dim * m for m in config.dim_mults)]
    return list(zip(widths[:-1], widths[1:]))


class TemporalUnet(nn.Module):
    """Diffuser's temporal U-Net: (B, H, transition_dim) trajectories and steps k (B,) -> x0_hat of the same shape.
    Each level: two residual blocks (+ attention), then a stride-2 convolution except at the last level;
    the way up mirrors it with transposed convolutions and skip connections."""

    def __init__(self, transition_dim: int, config: DiffuserConfig):
        super().__init__()
        dim, kernel = config.hidden_dim, config.kernel_size
        levels = _level_widths(transition_dim, config)
        attention = (lambda c: LinearAttention(c)) if config.attention else (lambda c: nn.Identity())
        self.step_embedding = StepEmbedding(dim)
        self.down = nn.ModuleList()
        for i, (w_in, w_out) in enumerate(levels):
            last = i == len(levels) - 1
            self.down.append(nn.ModuleList([
                ResidualTemporalBlock(w_in, w_out, dim, kernel), ResidualTemporalBlock(w_out, w_out, dim, kernel),
                attention(w_out), nn.Identity() if last else nn.Conv1d(w_out, w_out, 3, stride=2, padding=1)]))
        mid = levels[-1][1]
        self.mid = nn.ModuleList([ResidualTemporalBlock(mid, mid, dim, kernel), attention(mid),
                                  ResidualTemporalBlock(mid, mid, dim, kernel)])
        self.up = nn.ModuleList()
        for w_in, w_out in reversed(levels[1:]):
            self.up.append(nn.ModuleList([
                ResidualTemporalBlock(2 * w_out, w_in, dim, kernel), ResidualTemporalBlock(w_in, w_in, dim, kernel),
                attention(w_in), nn.ConvTranspose1d(w_in, w_in, 4, stride=2, padding=1)]))
        self.final = nn.Sequential(ConvBlock(dim, dim, kernel), nn.Conv1d(dim, transition_dim, 1))

    def forward(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)
        t = self.step_embedding(k)
        skips = []
        for first, second, attend, downsample in self.down:
            h = attend(second(first(h, t), t))
            skips.append(h)
            h = downsample(h)
        first, attend, second = self.mid
        h = second(attend(first(h, t)), t)
        for first, second, attend, upsample in self.up:
            h = upsample(attend(second(first(torch.cat([h, skips.pop()], dim=1), t), t)))
        return self.final(h).transpose(1, 2)


class ValueFunction(nn.Module):
    """Diffuser's value network: the U-Net's way down (every level halves the time axis), two narrowing
    residual blocks, then an MLP on the flattened features and the step embedding -> J (B,)."""

    def __init__(self, transition_dim: int, config: DiffuserConfig):
        super().__init__()
        dim, kernel = config.hidden_dim, config.kernel_size
        self.step_embedding = StepEmbedding(dim)
        self.down = nn.ModuleList(nn.ModuleList([
            ResidualTemporalBlock(w_in, w_out, dim, kernel), ResidualTemporalBlock(w_out, w_out, dim, kernel),
            nn.Conv1d(w_out, w_out, 3, stride=2, padding=1)]) for w_in, w_out in _level_widths(transition_dim, config))
        mid = config.hidden_dim * config.dim_mults[-1]
        self.mid = nn.ModuleList([ResidualTemporalBlock(mid, mid // 2, dim, kernel),
                                  nn.Conv1d(mid // 2, mid // 2, 3, stride=2, padding=1),
                                  ResidualTemporalBlock(mid // 2, mid // 4, dim, kernel),
                                  nn.Conv1d(mid // 4, mid // 4, 3, stride=2, padding=1)])
        length = config.horizon
        for _ in range(len(config.dim_mults) + 2):  # every stride-2 convolution: ceil(length / 2)
            length = (length + 1) // 2
        features = (mid // 4) * length
        self.head = nn.Sequential(nn.Linear(features + dim, features // 2), nn.Mish(), nn.Linear(features // 2, 1))

    def forward(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)
        t = self.step_embedding(k)
        for first, second, downsample in self.down:
            h = downsample(second(first(h, t), t))
        block1, down1, block2, down2 = self.mid
        h = down2(block2(down1(block1(h, t)), t))
        return self.head(torch.cat([h.flatten(1), t], dim=-1)).squeeze(-1)


# ----------------------------------------------------------------------------------------------- learner
class Diffuser(OfflineLearner):
    name = "diffuser"
    label = "Diffuser"
    checkpointed = ("unet", "unet_ema", "value", "value_ema", "unet_optimizer", "value_optimizer")
    config: DiffuserConfig

    def _build(self) -> None:
        c, device = self.config, self.device
        self.transition_dim = self.act_dim + self.obs_dim
        self.unet = TemporalUnet(self.transition_dim, c).to(device)
        self.value = ValueFunction(self.transition_dim, c).to(device)
        self.unet_ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.value_ema = copy.deepcopy(self.value).requires_grad_(False)
        self.unet_optimizer = self.adam(self.unet.parameters(), c.lr)
        self.value_optimizer = self.adam(self.value.parameters(), c.lr)
        self.schedule = DiffusionSchedule(c.diffusion_steps, c.cosine_s).to(device)
        weights = torch.ones(c.horizon, self.transition_dim, device=device)
        weights[0, :self.act_dim] = c.action_weight
        self.loss_weights = weights

    def segment_sampler_options(self) -> dict:
        c = self.config
        return {"length": c.horizon, "discount": c.discount, "terminal_reward": c.termination_penalty,
                "pad": True, "max_episode_steps": c.max_episode_steps}

    # ---- trajectories ----------------------------------------------------------------------------
    def trajectories(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Raw (B, H, obs_dim) and (B, H, act_dim) -> normalized x (B, H, act_dim + obs_dim), actions first."""
        return torch.cat([self.normalizer.actions(actions), self.normalizer.observations(observations)], dim=-1)

    def _condition(self, x: torch.Tensor, first_state: torch.Tensor) -> torch.Tensor:
        """x with its first state set to `first_state` (normalized): the inpainting condition."""
        head = torch.cat([x[:, :1, :self.act_dim], first_state.unsqueeze(1)], dim=-1)
        return torch.cat([head, x[:, 1:]], dim=1)

    def diffusion_loss(self, x0: torch.Tensor, k: torch.Tensor, noise: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted loss, loss of a_0) of the x0-predicting U-Net at steps k with the given noise."""
        first_state = x0[:, 0, self.act_dim:]
        x_k = self._condition(self.schedule.q_sample(x0, k, noise), first_state)
        prediction = self._condition(self.unet(x_k, k), first_state)
        error = (prediction - x0).square()
        return (error * self.loss_weights).mean(), error[:, 0, :self.act_dim].mean()

    def value_loss(self, x0: torch.Tensor, returns: torch.Tensor, k: torch.Tensor, noise: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        x_k = self._condition(self.schedule.q_sample(x0, k, noise), x0[:, 0, self.act_dim:])
        prediction = self.value(x_k, k)
        return F.mse_loss(prediction, returns), prediction.mean()

    # ---- training --------------------------------------------------------------------------------
    def update(self, batch) -> dict[str, torch.Tensor]:
        c = self.config
        train_value = c.value_steps is None or self.num_updates < c.value_steps
        metrics = self._step(self, self.trajectories(batch.observations, batch.actions), batch.returns,
                             train_value=train_value)
        if self.num_updates % c.ema_every == 0:
            self._step_ema(self.unet_ema, self.unet)
            if train_value:
                self._step_ema(self.value_ema, self.value)
        self.num_updates += 1
        return metrics

    def _update_step(self, x0: torch.Tensor, returns: torch.Tensor, train_value: bool) -> dict[str, torch.Tensor]:
        steps = lambda: self.schedule.sample_steps(x0.shape[0], x0.device, self.generator)  # noqa: E731
        noise = lambda: torch.randn(x0.shape, device=x0.device, generator=self.generator)  # noqa: E731
        loss, a0_loss = self.diffusion_loss(x0, steps(), noise())
        self.unet_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.unet_optimizer.step()
        metrics = {"diffusion_loss": loss.detach(), "a0_loss": a0_loss.detach()}
        if train_value:
            value_loss, value_mean = self.value_loss(x0, returns, steps(), noise())
            self.value_optimizer.zero_grad(set_to_none=True)
            value_loss.backward()
            self.value_optimizer.step()
            metrics.update(value_loss=value_loss.detach(), value_mean=value_mean.detach())
        return metrics

    @torch.no_grad()
    def _step_ema(self, average: nn.Module, model: nn.Module) -> None:
        if self.num_updates < self.config.ema_start:
            average.load_state_dict(model.state_dict())
            return
        torch._foreach_lerp_(list(average.parameters()), list(model.parameters()), 1.0 - self.config.ema_decay)

    # ---- planning --------------------------------------------------------------------------------
    def _value_gradient(self, x: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            value = self.value_ema(x, k)
            (gradient,) = torch.autograd.grad(value.sum(), x)
        return value.detach(), gradient

    @torch.no_grad()
    def plan(self, obs: torch.Tensor, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """plan_samples guided plans per state: (actions (n, P, H, act_dim) in raw units, observations
        (n, P, H, obs_dim) raw, values J (n, P)). Random draws use `generator` (default: the learner's)."""
        c, schedule = self.config, self.schedule
        generator = generator or self.generator
        obs = self._as_obs(obs).reshape(-1, self.obs_dim)
        n, samples = obs.shape[0], c.plan_samples
        first_state = self.normalizer.observations(obs).repeat_interleave(samples, dim=0)
        shape = (n * samples, c.horizon, self.transition_dim)
        x = self._condition(torch.randn(shape, device=self.device, generator=generator), first_state)
        guided = c.guide_steps > 0 and c.guide_scale > 0
        values = None
        for k in range(c.diffusion_steps, 0, -1):
            steps = torch.full((shape[0],), k, device=self.device, dtype=torch.long)
            if guided and k > c.t_stopgrad:
                for _ in range(c.guide_steps):
                    values, gradient = self._value_gradient(x, steps)
                    if c.scale_grad_by_std:  # Diffuser: Sigma_k, with its log-variance clipped at log(1e-20)
                        gradient = schedule.posterior_variance[k].clamp_min(1e-20) * gradient
                    x = self._condition(x + c.guide_scale * gradient, first_state)
            if k == 1 and not (guided and k > c.t_stopgrad):
                values = self.value_ema(x, steps)  # J of the chain at k = 1 ranks the plans, as in Diffuser
            x0 = self.unet_ema(x, steps)
            x = schedule.posterior_x0_coef[k] * x0 + schedule.posterior_xk_coef[k] * x
            if k > 1:
                x = x + schedule.posterior_std[k] * torch.randn(shape, device=self.device, generator=generator)
            x = self._condition(x, first_state)
        x = x.view(n, samples, c.horizon, self.transition_dim)
        actions = self.normalizer.unnormalize_actions(x[..., :self.act_dim])
        observations = x[..., self.act_dim:] * self.normalizer.obs_std + self.normalizer.obs_mean
        return actions, observations, values.view(n, samples)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """The first action of the highest-value plan for each state, clipped to [-1, 1]. Planning samples
        whatever `deterministic` says (Diffuser's policy is its sampler); `generator` drives the noise."""
        single = torch.as_tensor(obs).dim() == 1
        actions, _, values = self.plan(obs, generator)
        best = values.argmax(dim=1)
        first = actions[torch.arange(actions.shape[0], device=actions.device), best, 0].clamp(-1.0, 1.0)
        return first[0] if single else first

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        raise ValueError("diffuser is a planner with no action density log pi(a|s): it cannot be combined with "
                         "importance weights (adept-*) or other methods that need one")
