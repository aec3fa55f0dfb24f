"""COMBO's critic and policy (Yu et al. 2021, https://arxiv.org/abs/2102.08363): CQL whose conservative
term pushes Q down on model rollouts and up on the offline data.

  critic: sum_i [ (Q_i(s, a) - (r + gamma (1 - d) min_j Q_target_j(s', a')))^2                 on all rows (D and model)
                  + beta * ( E_{s ~ rho}[ temperature * logsumexp_a~ (Q_i(s, a~) - log mu(a~)) / temperature ]
                             - E_{(s, a) ~ D}[ Q_i(s, a) ] ) ]
  actor:  alpha log pi(a~|s) - min_i Q_i(s, a~) on all rows; alpha tuned towards -act_dim.

rho, the states the push-down is taken on: `conservative_states = "mix"` (the batch's real and model
rows, the default of the OfflineRL-Kit reproduction) or "model" (model rows only, the paper's
rho = d^pi_M-hat). The push-down is CQL(H)'s importance-sampled logsumexp over uniform and policy
actions (baselines.cql, shared); the push-up is on the real rows' (s, a) only.

Batches come from the runner's MixedSampler with a fixed real fraction (run.mixing = "fraction"):
the first `real_rows` rows are from D, the rest from the model rollouts. The runner sets `real_rows`
from the run config (adept.model_rollouts refuses a `combo` run without the fraction rule).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from adept.config import require
from baselines.cql import CQL, CQLConfig


@dataclass
class COMBOConfig(CQLConfig):
    cql_alpha: float = 1.0              # beta, the conservative weight (per dataset)
    actor_lr: float = 1e-4              # OfflineRL-Kit's COMBO (policy 1e-4, critic 3e-4, temperature 1e-4)
    alpha_lr: float = 1e-4
    bc_warmup_steps: int = 0            # COMBO starts with the Q-based policy loss
    conservative_states: Literal["mix", "model"] = "mix"
    real_rows: int | None = None        # rows 0..real_rows-1 of each batch are from D (set by the runner for
    #                                     the `combo` method); None: every row is real (the learner alone, e.g. tests)

    def validate(self) -> None:
        super().validate()
        require(self.conservative_states in ("mix", "model"),
                f"conservative_states must be 'mix' or 'model', got {self.conservative_states!r}")
        require(self.real_rows is not None or self.conservative_states == "mix",
                "conservative_states='model' needs the real/model split of each batch (real_rows): run the "
                "combo method with run.mixing=fraction, the runner then sets it")
        require(self.real_rows is None or 1 <= self.real_rows < self.batch_size,
                f"combo needs real and model rows in every batch: real_rows must be in [1, batch_size - 1] = "
                f"[1, {self.batch_size - 1}], got {self.real_rows} (choose run.real_fraction strictly between 0 and 1)")


class COMBO(CQL):
    name = "combo"
    label = "COMBO"
    config: COMBOConfig

    def update(self, batch) -> dict[str, torch.Tensor]:
        if self.config.real_rows is not None and batch.observations.shape[0] != self.config.batch_size:
            raise ValueError(f"combo got a batch of {batch.observations.shape[0]} rows, configured for "
                             f"{self.config.batch_size} with {self.config.real_rows} real rows first")
        return super().update(batch)

    def _conservative_gap(self, obs: torch.Tensor, next_obs: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """E_rho[logsumexp_a~ Q_i] - E_D[Q_i(s, a)] per critic, (2,): push-down on the rho rows, push-up on
        the real rows 0..real_rows-1 (all rows if real_rows is None)."""
        real = self.config.real_rows if self.config.real_rows is not None else obs.shape[0]
        rho = slice(None) if self.config.conservative_states == "mix" else slice(real, None)
        push_down = self._sampled_q_logsumexp(obs[rho], next_obs[rho]).mean(dim=1)
        return push_down - q[:, :real].mean(dim=1)
