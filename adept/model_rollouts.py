"""Short model rollouts with the current policy: the synthetic-data source of MOPO and COMBO.

The runner owns the learner's update loop; this source is called into like adept.closed_loop.ClosedLoop
(before_update / after_update / diagnostics / state_dict / load_state_dict, `.synthetic`). Every
`epoch_steps` learner updates (MBPO/MOPO: rollout_freq = 1000):

1. `rollouts_per_epoch` start states drawn uniformly from D (MOPO: 50,000);
2. h-step rollouts (`horizon`) with actions a ~ pi(.|s) of the current policy in the ensemble
   (adept.ensemble.EnsembleDynamics.step: a random elite per transition, the env's termination rule),
   one batched call (adept.rollouts.generate_rollouts, the same as ADEPT's PE);
3. the reward is penalised as in MOPO, r~ = r - lambda u(s, a) with u = max_i ||sigma_i(s, a)||
   (`penalty_coef` = lambda; COMBO uses no penalty);
4. the transitions go into the synthetic buffer D-hat, which keeps the last `retain_epochs` batches
   (MOPO: model_retain_epochs = 5).

The learner trains on batches with a fixed real/model ratio (run.mixing = "fraction", MOPO: 5%
real, COMBO: 50%), drawn by the runner's MixedSampler. The ensemble is fixed during policy learning.

At each evaluation, `diagnostics` reports the Theorem 4.4 estimates (adept.diagnostics) on the
transitions the ensemble's fit held out, and with a simulator ground truth the gt/ columns
(adept.ground_truth), measured for the ensemble exactly as for the diffusion world model.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass

import numpy as np
import torch

from adept.config import ConfigError, require
from adept.ensemble import EnsembleDynamics, PenaltyNorm
from adept.rollouts import generate_rollouts
from baselines.replay import TensorBuffer

log = logging.getLogger("adept.model_rollouts")


@dataclass
class ModelRolloutConfig:
    """Rollout settings of MOPO and COMBO; defaults are the MOPO code's (tianheyu927/mopo,
    examples/config/d4rl/base.py). Per-dataset h and lambda: docs/notes/model-based-baselines.md."""

    epoch_steps: int = 1000             # learner updates between rollout batches (rollout_freq)
    rollouts_per_epoch: int = 50_000    # start states per batch (rollout_batch_size)
    horizon: int = 5                    # h, rollout length (per dataset)
    penalty_coef: float = 0.0           # lambda of MOPO's r - lambda u(s, a) (per dataset); COMBO: 0
    penalty_norm: PenaltyNorm = "std"   # u = max_i ||sigma_i||_2 (MOPO code); "variance": ||Sigma_i||_F (paper)
    retain_epochs: int = 5              # D-hat holds the last retain_epochs batches (model_retain_epochs)
    rollout_deterministic: bool = False  # MOPO/COMBO: a ~ pi(.|s), a sample
    diagnostics_samples: int = 4096     # held-out transitions for the Theorem 4.4 estimates; 0 = off
    ground_truth_states: int = 256      # held-out states restored in the simulator per evaluation (gt/); 0 = off
    ground_truth_tolerance: float = 0.1  # tolerance ball of the TV-style eps (gt/eps_m_tv): z-units RMS

    def validate(self) -> None:
        for name in ("epoch_steps", "rollouts_per_epoch", "horizon", "retain_epochs"):
            require(getattr(self, name) >= 1, f"model_rollouts.{name} must be >= 1, got {getattr(self, name)}")
        require(self.penalty_coef >= 0.0, f"model_rollouts.penalty_coef must be >= 0, got {self.penalty_coef}")
        require(self.penalty_norm in ("std", "variance"),
                f"model_rollouts.penalty_norm must be 'std' or 'variance', got {self.penalty_norm!r}")
        require(self.diagnostics_samples == 0 or self.diagnostics_samples >= 2,
                f"model_rollouts.diagnostics_samples must be 0 (off) or >= 2, got {self.diagnostics_samples}")
        require(self.ground_truth_states >= 0,
                f"model_rollouts.ground_truth_states must be >= 0 (0 = off), got {self.ground_truth_states}")
        require(self.ground_truth_tolerance > 0.0,
                f"model_rollouts.ground_truth_tolerance must be > 0, got {self.ground_truth_tolerance}")

    @property
    def synthetic_capacity(self) -> int:
        return self.rollouts_per_epoch * self.horizon * self.retain_epochs


def check_method_config(method: str, run, rollouts: ModelRolloutConfig) -> None:
    """What MOPO and COMBO are, checked before a run starts: a fixed real/model ratio, and MOPO's
    penalty (lambda > 0) for mopo, none for combo."""
    if run.mixing != "fraction":
        raise ConfigError(f"{method} trains on a fixed share of real data in every batch: set run.mixing=fraction "
                          f"and run.real_fraction (MOPO: 0.05, COMBO: 0.5), got run.mixing={run.mixing!r}")
    if method == "mopo" and rollouts.penalty_coef <= 0.0:
        raise ConfigError("mopo penalises model rewards by lambda * uncertainty: set model_rollouts.penalty_coef "
                          "> 0 (MOPO's per-dataset lambda, docs/notes/model-based-baselines.md); with 0 it is MBPO")
    if method == "combo" and rollouts.penalty_coef != 0.0:
        raise ConfigError(f"combo's conservatism is its critic's regulariser, not a reward penalty: set "
                          f"model_rollouts.penalty_coef=0, got {rollouts.penalty_coef}")


def check_run_configs(configs: dict[tuple[str, str, str], dict]) -> None:
    """ConfigError naming the run unless every {(method, env, dataset): sections} (the sections `adept train`
    gets, per-dataset settings merged) is a valid mopo / combo run: the workflow's check before any job."""
    from adept.methods import parse_method
    from adept.runner import TrainConfig
    from baselines import learner_config

    for (method, env, dataset), sections in configs.items():
        try:
            spec = parse_method(method)
            config = TrainConfig.from_dict(sections)
            learner_config(spec.learner, config.learner)
            check_method_config(spec.base, config.run, config.model_rollouts)
        except (ConfigError, ValueError) as err:
            raise ConfigError(f"config of method {method!r} on {env}-{dataset} is invalid: {err} (set it in "
                              f"method_overrides.{method} or task_overrides.{method}.{env}-{dataset})") from None


class _PenalizedModel:
    """The ensemble as generate_rollouts steps it, with MOPO's reward r - lambda u(s, a); keeps the
    penalties u of the last rollout (all N x h model steps) for the logs."""

    def __init__(self, ensemble: EnsembleDynamics, coef: float, norm: PenaltyNorm):
        self.ensemble, self.coef, self.norm = ensemble, coef, norm
        self.obs_dim, self.act_dim = ensemble.obs_dim, ensemble.act_dim
        self.uncertainties: list[torch.Tensor] = []

    def step(self, obs: torch.Tensor, act: torch.Tensor, generator: torch.Generator | None = None):
        next_obs, reward, terminal, uncertainty = self.ensemble.step_with_uncertainty(obs, act, generator, self.norm)
        self.uncertainties.append(uncertainty)
        return next_obs, reward - self.coef * uncertainty, terminal


class ModelRollouts:
    """Synthetic data for ``mopo`` and ``combo``, driven by the runner."""

    def __init__(self, config: ModelRolloutConfig, ensemble: EnsembleDynamics, real: TensorBuffer, *,
                 generator: torch.Generator, eval_generator: torch.Generator | None = None, gamma: float = 0.99,
                 heldout: TensorBuffer | None = None, ground_truth=None):
        """`real` (all of D) gives start states; `heldout` (default `real`) the rows the diagnostics use.
        `generator` drives start states and model noise (training); `eval_generator` everything
        `diagnostics` draws. Both are the caller's (the runner checkpoints them)."""
        if ensemble.obs_dim != real.obs_dim or ensemble.act_dim != real.act_dim:
            raise ValueError(f"the ensemble models obs_dim={ensemble.obs_dim}, act_dim={ensemble.act_dim} but the data "
                             f"has {real.obs_dim}, {real.act_dim}: fit the ensemble on this env's data")
        self.config, self.ensemble, self.real = config, ensemble, real
        self.heldout = heldout if heldout is not None else real
        self.generator, self.eval_generator, self.gamma = generator, eval_generator, gamma
        self.ground_truth = ground_truth
        self.synthetic = TensorBuffer(config.synthetic_capacity, real.obs_dim, real.act_dim, real.device)
        self._previous_policy = None

    # ---- called by the runner -------------------------------------------------------------
    def before_update(self, step: int, learner) -> dict[str, torch.Tensor]:
        """At the start of each epoch: h-step rollouts of the current policy from dataset states into D-hat."""
        cfg = self.config
        if step % cfg.epoch_steps != 0:
            return {}
        start = self.real.sample_observations(cfg.rollouts_per_epoch, self.generator)
        model = _PenalizedModel(self.ensemble, cfg.penalty_coef, cfg.penalty_norm)
        rollout = generate_rollouts(model, learner, start, horizon=cfg.horizon, gamma=self.gamma,
                                    generator=self.generator, deterministic_policy=cfg.rollout_deterministic)
        self.synthetic.add(rollout.observations, rollout.actions, rollout.rewards, rollout.next_observations,
                           rollout.dones)
        uncertainty = torch.stack(model.uncertainties)
        stats = {**rollout.stats, "uncertainty_mean": uncertainty.mean(), "uncertainty_max": uncertainty.max()}
        return {f"rollout/{k}": v for k, v in stats.items()}

    def after_update(self, step: int, learner) -> dict[str, torch.Tensor]:
        return {}  # the ensemble is fixed during policy learning

    def diagnostics(self, learner) -> dict[str, float]:
        """Theorem 4.4 estimates of the ensemble on held-out transitions (and gt/ with a ground truth);
        every random draw comes from the evaluation generator (host values; eval cadence only)."""
        from adept.diagnostics import PolicyWithGenerator, return_gap_report

        cfg = self.config
        if cfg.diagnostics_samples == 0 and self.ground_truth is None:
            return {}
        generator = self.eval_generator
        if generator is None:
            raise ValueError("ModelRollouts.diagnostics needs an eval_generator (a generator of its own, so that "
                             "evaluation does not change the training trajectory)")
        report: dict[str, float] = {}
        if cfg.diagnostics_samples > 0:
            previous = (PolicyWithGenerator(self._previous_policy, generator)
                        if self._previous_policy is not None else None)
            batch = self.heldout.sample(cfg.diagnostics_samples, generator)
            report = return_gap_report(world_model=self.ensemble, policy=PolicyWithGenerator(learner, generator),
                                       previous_policy=previous, batch=batch, gamma=self.gamma,
                                       horizon=cfg.horizon, generator=generator)
        if self.ground_truth is not None:
            report.update(self.ground_truth.measure(self.ensemble, learner, self._previous_policy, generator))
        self._previous_policy = copy.deepcopy(learner)
        return report

    # ---- checkpointing --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"synthetic": self.synthetic.state_dict(),
                "previous_policy": self._previous_policy.state_dict() if self._previous_policy else None}

    def load_state_dict(self, state: dict, learner) -> None:
        self.synthetic.load_state_dict(state["synthetic"])
        if state["previous_policy"] is not None:
            self._previous_policy = copy.deepcopy(learner)
            self._previous_policy.load_state_dict(state["previous_policy"])


def ensemble_split(ensemble: EnsembleDynamics, dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """(training rows, held-out rows) of the ensemble's fit, from its metadata, or None (with a warning)
    if it was fitted on other data."""
    from adept.data.dataset import split_holdout

    holdout = ensemble.metadata.get("holdout")
    n = len(dataset.observations)
    if not holdout or holdout.get("num_transitions") != n:
        log.warning("the ensemble's held-out split is unknown or for a dataset of another size (%s): its "
                    "diagnostics are measured on all rows, including those it was fitted on", json.dumps(holdout))
        return None
    return split_holdout(n, holdout["holdout_fraction"], holdout["seed"])


def make_model_rollouts(config: ModelRolloutConfig, ensemble_path, env: str, dataset, real: TensorBuffer, device,
                        *, gamma: float, generator: torch.Generator, eval_generator: torch.Generator
                        ) -> ModelRollouts:
    """The source of a mopo/combo run: the ensemble from `ensemble_path`, its held-out rows for the
    diagnostics, and the simulator ground truth where the data stores simulator states."""
    from adept.ground_truth import GroundTruth, simulator_states

    ensemble = EnsembleDynamics.load(ensemble_path, device)
    if ensemble.env != env:
        raise ValueError(f"the ensemble {ensemble_path} models {ensemble.env}, not {env}: fit one on {env}'s data "
                         f"with `python -m adept ensemble --env {env} ...`")
    split = ensemble_split(ensemble, dataset)
    heldout_rows = split[1] if split is not None else None
    heldout = TensorBuffer.from_dataset(dataset, device, indices=heldout_rows) if split is not None else None
    ground_truth = None
    if config.ground_truth_states > 0:
        states = simulator_states(dataset, heldout_rows)
        if states is not None:
            ground_truth = GroundTruth(env, states, num_states=config.ground_truth_states, horizon=config.horizon,
                                       gamma=gamma, tolerance=config.ground_truth_tolerance,
                                       deterministic_policy=config.rollout_deterministic)
    return ModelRollouts(config, ensemble, real, generator=generator, eval_generator=eval_generator, gamma=gamma,
                         heldout=heldout, ground_truth=ground_truth)
