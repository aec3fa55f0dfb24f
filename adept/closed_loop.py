"""Algorithm 1: the closed loop between guided policy evaluation and importance-sampled world-model updates.

The runner owns the learner's update loop; this module is the synthetic-data source it calls into.
Per epoch of ``epoch_steps`` learner updates:

1. PE: ``rollouts_per_epoch`` start states drawn from D, H-step rollouts in the guided diffusion
   world model with actions sampled from the current policy, appended to the synthetic buffer D-hat
   (one batched call on the device);
2. the learner trains on batches drawn from D ∪ D-hat by the runner's MixedSampler;
3. IWU: ``iwu_steps_per_epoch`` world-model steps on batches of B_m offline transitions weighted by
   pi_phi(a|s) / pi_D(a|s) (Eq. 3), spread evenly over the epoch. They come from the rows the
   initial fit trained on: the rows it held out stay held out for the diagnostics all run long.

``diff-<learner>`` (Diff+X) runs step 1 only: the world model trained once before training is
never refitted and no importance weights are computed.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from adept.config import require
from adept.importance import ImportanceConfig, importance_weights
from adept.rollouts import generate_rollouts
from adept.world_model import WorldModel
from baselines.replay import TensorBuffer


@dataclass
class ClosedLoopConfig:
    """Closed-loop hyperparameters. Defaults: Table 2/3 of the paper where it gives them,
    otherwise the choice argued in docs/reproduction-notes.md."""

    epoch_steps: int = 1000            # learner gradient steps per epoch (Table 3)
    rollouts_per_epoch: int = 1000     # N_e, "evaluation steps per epoch" (Table 3): PE rollouts started per epoch
    horizon: int = 10                  # H (Table 2)
    iwu_steps_per_epoch: int = 1000    # world-model steps per epoch; 1 = the most literal reading of Algorithm 1
    synthetic_capacity: int = 1_000_000  # replay buffer size (Table 3)
    refit_world_model: bool = True     # False for Diff+X
    importance_sampling: bool = True   # False: IWU with unit weights (an extra ablation)
    rollout_deterministic: bool = False  # paper: a ~ pi(s), a sample
    importance: ImportanceConfig = field(default_factory=ImportanceConfig)
    diagnostics_samples: int = 4096    # offline transitions used for the Theorem 4.4 estimates
    ground_truth_states: int = 256     # held-out states restored in the simulator per evaluation (gt/); 0 = off
    ground_truth_tolerance: float = 0.1  # tolerance ball of the TV-style eps (gt/eps_m_tv): z-units RMS

    def validate(self) -> None:
        require(self.epoch_steps >= 1, f"adept.epoch_steps must be >= 1, got {self.epoch_steps}")
        require(self.rollouts_per_epoch >= 0,
                f"adept.rollouts_per_epoch must be >= 0, got {self.rollouts_per_epoch}")
        require(self.horizon >= 1, f"adept.horizon must be >= 1, got {self.horizon}")
        require(self.iwu_steps_per_epoch >= 0,
                f"adept.iwu_steps_per_epoch must be >= 0, got {self.iwu_steps_per_epoch}")
        require(self.synthetic_capacity >= self.rollouts_per_epoch * self.horizon,
                f"adept.synthetic_capacity ({self.synthetic_capacity}) must hold at least one epoch of "
                f"rollouts (rollouts_per_epoch * horizon = {self.rollouts_per_epoch * self.horizon})")
        require(self.diagnostics_samples >= 2,
                f"adept.diagnostics_samples must be >= 2, got {self.diagnostics_samples}")
        require(self.ground_truth_states >= 0,
                f"adept.ground_truth_states must be >= 0 (0 turns the simulator ground truth off), "
                f"got {self.ground_truth_states}")
        require(self.ground_truth_tolerance > 0.0,
                f"adept.ground_truth_tolerance must be > 0, got {self.ground_truth_tolerance}")


def iwu_steps_due(step_in_epoch: int, steps_per_epoch: int, iwu_per_epoch: int) -> int:
    """How many IWU steps follow learner update number `step_in_epoch` (0-based) so that
    `iwu_per_epoch` steps are spread evenly over the epoch and all are done by its end."""
    return ((step_in_epoch + 1) * iwu_per_epoch) // steps_per_epoch - (step_in_epoch * iwu_per_epoch) // steps_per_epoch


class ClosedLoop:
    """Synthetic data for ``adept-*`` and ``diff-*`` methods, driven by the runner."""

    def __init__(self, config: ClosedLoopConfig, world_model: WorldModel, real: TensorBuffer,
                 behavior_policy=None, *, generator: torch.Generator, gamma: float = 0.99,
                 world_model_rows: TensorBuffer | None = None, heldout: TensorBuffer | None = None,
                 eval_generator: torch.Generator | None = None, ground_truth=None):
        """`real` (all of D) gives PE start states. `world_model_rows` are the rows IWU may train on: the
        initial fit's training rows; `heldout` are the rows it held out, used by the diagnostics only
        (both default to `real`: in-sample diagnostics; giving `heldout` without `world_model_rows` is
        refused, IWU would train on it). `ground_truth` (adept.ground_truth.GroundTruth, optional)
        adds the simulator measurements to `diagnostics`.

        `generator` drives start states, world-model noise and IWU batches (training); `eval_generator`
        everything `diagnostics` draws, so training never depends on how often evaluation runs. Both
        are the caller's (the runner checkpoints them)."""
        if config.refit_world_model and config.importance_sampling and behavior_policy is None:
            raise ValueError("ADEPT's importance-sampled world-model update needs the behaviour policy pi_D: "
                             "pass --behavior-policy (fit one with `python -m adept behavior-policy`)")
        if heldout is not None and world_model_rows is None:
            raise ValueError("ClosedLoop got held-out rows but no world_model_rows: IWU would sample the "
                             "held-out rows too; pass the initial fit's training rows as world_model_rows")
        self.config = config
        self.world_model = world_model
        self.real = real
        self.world_model_rows = world_model_rows if world_model_rows is not None else real
        # Theorem 4.4 errors are measured on transitions the initial fit held out (in-sample otherwise).
        self.heldout = heldout if heldout is not None else real
        self.behavior_policy = behavior_policy
        self.gamma = gamma
        self.generator = generator
        self.eval_generator = eval_generator
        self.ground_truth = ground_truth
        self.synthetic = TensorBuffer(config.synthetic_capacity, real.obs_dim, real.act_dim, real.device)
        self._previous_policy = None

    # ---- called by the runner -------------------------------------------------------------
    def before_update(self, step: int, learner) -> dict[str, torch.Tensor]:
        """At the start of each epoch: PE rollouts with the current policy into D-hat."""
        if step % self.config.epoch_steps != 0 or self.config.rollouts_per_epoch == 0:
            return {}
        start = self.real.sample_observations(self.config.rollouts_per_epoch, self.generator)
        rollout = generate_rollouts(self.world_model, learner, start, horizon=self.config.horizon,
                                    generator=self.generator, gamma=self.gamma,
                                    deterministic_policy=self.config.rollout_deterministic)
        self.synthetic.add(rollout.observations, rollout.actions, rollout.rewards,
                           rollout.next_observations, rollout.dones)
        return {f"rollout/{k}": v for k, v in rollout.stats.items()}

    def after_update(self, step: int, learner) -> dict[str, torch.Tensor]:
        """IWU steps due after this learner update (none for Diff+X)."""
        cfg = self.config
        if not cfg.refit_world_model:
            return {}
        due = iwu_steps_due(step % cfg.epoch_steps, cfg.epoch_steps, cfg.iwu_steps_per_epoch)
        metrics: dict[str, torch.Tensor] = {}
        for _ in range(due):
            metrics = self.importance_sampled_update(learner)
        return metrics

    def importance_sampled_update(self, learner) -> dict[str, torch.Tensor]:
        """One IWU step (Algorithm 1, subroutine IWU) on B_m offline transitions."""
        # Only the initial fit's training rows: the held-out rows stay held out for the whole run.
        batch = self.world_model_rows.sample(self.world_model.config.is_batch_size, self.generator)
        weights, stats = None, {}
        if self.config.importance_sampling:
            with torch.no_grad():
                log_pi = learner.log_prob(batch.observations, batch.actions)
                log_pi_b = self.behavior_policy.log_prob(batch.observations, batch.actions)
            weights, stats = importance_weights(log_pi, log_pi_b, self.config.importance)
        world_model_metrics = self.world_model.update(batch, weights, self.generator)
        return {**{f"wm/{k}": v for k, v in world_model_metrics.items()}, **{f"iw/{k}": v for k, v in stats.items()}}

    def diagnostics(self, learner) -> dict[str, float]:
        """Theorem 4.4 estimates on held-out offline transitions and, with a ground truth, the gt/
        simulator measurements (host values; called at eval cadence only). Every random draw comes
        from the evaluation generator, never the training one nor the learner's."""
        from adept.diagnostics import PolicyWithGenerator, return_gap_report

        generator = self.eval_generator
        if generator is None:
            raise ValueError("ClosedLoop.diagnostics needs an eval_generator (a generator of its own, so that "
                             "evaluation does not change the training trajectory)")
        previous = PolicyWithGenerator(self._previous_policy, generator) if self._previous_policy is not None else None
        batch = self.heldout.sample(self.config.diagnostics_samples, generator)
        report = return_gap_report(
            world_model=self.world_model, policy=PolicyWithGenerator(learner, generator), previous_policy=previous,
            behavior_policy=self.behavior_policy, batch=batch, gamma=self.gamma,
            importance=self.config.importance, horizon=self.config.horizon, generator=generator)
        if self.ground_truth is not None:
            report.update(self.ground_truth.measure(self.world_model, learner, self._previous_policy, generator))
        self._previous_policy = copy.deepcopy(learner)
        return report

    # ---- checkpointing --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"world_model": self.world_model.state_dict() if self.config.refit_world_model else None,
                "world_model_optimizer": (self.world_model.optimizer.state_dict()
                                          if self.config.refit_world_model else None),
                "synthetic": self.synthetic.state_dict(),
                "previous_policy": self._previous_policy.state_dict() if self._previous_policy else None}

    def load_state_dict(self, state: dict, learner) -> None:
        if state["world_model"] is not None:
            self.world_model.load_state_dict(state["world_model"])
            self.world_model.optimizer.load_state_dict(state["world_model_optimizer"])
        self.synthetic.load_state_dict(state["synthetic"])
        if state["previous_policy"] is not None:
            self._previous_policy = copy.deepcopy(learner)
            self._previous_policy.load_state_dict(state["previous_policy"])
