"""The MuJoCo simulator as ground truth for the world model, on the states the current policy visits.

Every generated file and every D4RL v2 file stores the simulator state before each step
(`infos/qpos`, `infos/qvel`), so a dataset row can be restored exactly and stepped with any action.
At each evaluation, from N held-out rows (rows the world model never trained on):

- one-step errors of `world_model.step` (what PE uses) against the simulator, for the dataset's
  action and for a ~ pi(s): next-state MSE in the model's normalized units (mean over dimensions),
  reward squared error / reward_std^2, terminal agreement;
- an H-step rollout: the policy acts on the SIMULATOR's states, the simulator steps, and the model
  is stepped open-loop with the same actions from the same start: per-step (compounding) state and
  reward errors, the simulator's discounted H-step return J_H, and J-hat_H of a closed-loop PE
  rollout (adept.rollouts.generate_rollouts) from the same start states;
- Theorem 4.4's eps_r, eps_m (Defs. 4.1-4.2: max over t of an expectation over the policy's s_t, a_t)
  from one-step model predictions at the simulator's states s_t with the policy's a_t, both as the
  paper's MSE heuristic and as a tolerance-ball TV estimate; eps_pi (Def. 4.3) between the previous
  evaluation's policy and the current one; C as Eq. (9) prints it and as Theorem A.4's sum gives it;
- the simulator's own consistency with the file (restored state + dataset action vs the stored next
  observation and reward): the floor no model can beat on that file.

Trajectories stop at the first true terminal: the terminal transition counts, later steps are masked
in the simulator, the open-loop model rollout and J_H alike (the PE rollout stops at its own predicted
terminal, as in training). The 1000-step time limit is not part of the dynamics and is ignored.

Each simulator step starts from a reset MjData holding only the trajectory's (qpos, qvel), so a step
is a pure function of (state, action): MuJoCo's solver warm start would otherwise carry history
between the rows simulated one after another on the single env instance (a sub-float32 effect, but
it would make results depend on the order of rows and break bit-identical resume).

Estimators and the two C's are discussed in docs/notes/ground-truth.md.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import mujoco
import numpy as np
import torch

from adept.diagnostics import PolicyWithGenerator, policy_tv_distance, return_gap_bound, return_gap_bound_appendix
from adept.envs import get_env_spec, make_env
from adept.rollouts import generate_rollouts
from adept.world_model import WorldModel

log = logging.getLogger("adept.ground_truth")

PREFIX = "gt/"
TV_ACTION_SAMPLES = 8  # actions per state in the eps_pi Monte Carlo estimate (as adept.diagnostics)


@dataclass
class SimulatorStates:
    """Dataset rows (numpy) with the simulator state before each step."""

    observations: np.ndarray       # (N, obs_dim)
    actions: np.ndarray            # (N, act_dim)
    rewards: np.ndarray            # (N,)
    next_observations: np.ndarray  # (N, obs_dim)
    qpos: np.ndarray               # (N, nq) float64
    qvel: np.ndarray               # (N, nv) float64

    def __len__(self) -> int:
        return len(self.rewards)


def simulator_states(dataset, rows: np.ndarray | None = None) -> SimulatorStates | None:
    """The simulator states of `rows` of an OfflineDataset (default: all rows), or None with ONE warning
    if the file does not store them (e.g. a Minari file without infos/qpos, infos/qvel)."""
    missing = [key for key in ("qpos", "qvel") if key not in dataset.infos]
    where = dataset.path or f"{dataset.source} {dataset.env}-{dataset.dataset}"
    if missing:
        log.warning("%s has no infos/%s: the simulator ground truth (gt/ columns) is skipped",
                    where, " or infos/".join(missing))
        return None
    env = make_env(dataset.env)
    model = env.unwrapped.model
    env.close()
    qpos, qvel = (np.asarray(dataset.infos[key], np.float64) for key in ("qpos", "qvel"))
    if qpos.shape != (len(dataset), model.nq) or qvel.shape != (len(dataset), model.nv):
        log.warning("%s stores infos/qpos %s and infos/qvel %s, but %s needs (%d, %d) and (%d, %d): the simulator "
                    "ground truth (gt/ columns) is skipped", where, qpos.shape, qvel.shape, dataset.env,
                    len(dataset), model.nq, len(dataset), model.nv)
        return None
    rows = np.arange(len(dataset)) if rows is None else np.asarray(rows)
    return SimulatorStates(dataset.observations[rows], dataset.actions[rows], dataset.rewards[rows],
                           dataset.next_observations[rows], qpos[rows], qvel[rows])


@dataclass
class SimulatorStep:
    next_observations: np.ndarray  # (n, obs_dim) float32
    rewards: np.ndarray            # (n,) float32
    terminated: np.ndarray         # (n,) bool
    qpos: np.ndarray               # (n, nq) state after the step
    qvel: np.ndarray               # (n, nv)


class Simulator:
    """One gymnasium -v4 env stepped from arbitrary (qpos, qvel) states, row by row."""

    def __init__(self, env: str):
        self.spec = get_env_spec(env)
        self.env = make_env(env, seed=0)
        self.mujoco_env = self.env.unwrapped  # no TimeLimit / order checks: rows are restored, not reset

    def _restore(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        sim = self.mujoco_env
        mujoco.mj_resetData(sim.model, sim.data)  # drop the warm start and everything else of the last row
        sim.set_state(qpos, qvel)

    def observe(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """The env's observations of the states (n, nq), (n, nv) -> (n, obs_dim) float32."""
        out = np.empty((len(qpos), self.spec.obs_dim), np.float32)
        for i in range(len(qpos)):
            self._restore(qpos[i], qvel[i])
            out[i] = self.mujoco_env._get_obs()
        return out

    def step(self, qpos: np.ndarray, qvel: np.ndarray, actions: np.ndarray,
             active: np.ndarray | None = None) -> SimulatorStep:
        """Step each state with its action. Rows where `active` is False are not stepped: they keep
        their state, observation (of that state), reward 0 and terminated True."""
        n = len(qpos)
        active = np.ones(n, bool) if active is None else active
        result = SimulatorStep(np.empty((n, self.spec.obs_dim), np.float32), np.zeros(n, np.float32),
                               np.ones(n, bool), qpos.copy(), qvel.copy())
        sim = self.mujoco_env
        for i in range(n):
            self._restore(qpos[i], qvel[i])
            if active[i]:
                obs, reward, terminated, _, _ = sim.step(actions[i])
                result.rewards[i], result.terminated[i] = reward, terminated
                result.qpos[i], result.qvel[i] = sim.data.qpos, sim.data.qvel
            else:
                obs = sim._get_obs()
            result.next_observations[i] = obs
        return result

    def close(self) -> None:
        self.env.close()


class GroundTruth:
    """The gt/ measurements of one run: held-out simulator states, one env instance, the settings."""

    def __init__(self, env: str, states: SimulatorStates, *, num_states: int, horizon: int, gamma: float,
                 tolerance: float, deterministic_policy: bool = False):
        if len(states) == 0 or num_states < 1 or horizon < 1 or not tolerance > 0.0:
            raise ValueError(f"GroundTruth needs states, num_states >= 1, horizon >= 1 and tolerance > 0, got "
                             f"{len(states)} states, {num_states}, {horizon}, {tolerance}")
        self.states, self.num_states, self.horizon = states, num_states, horizon
        self.gamma, self.tolerance, self.deterministic_policy = gamma, tolerance, deterministic_policy
        self.simulator = Simulator(env)

    @torch.no_grad()
    def measure(self, world_model: WorldModel, policy, previous_policy, generator: torch.Generator
                ) -> dict[str, float]:
        """All gt/ values (host floats) for the current `policy`; `previous_policy` is the policy of the
        previous evaluation (None at the first: eps_pi = 0). Every random draw (rows, actions, model
        noise) comes from `generator`, an evaluation generator on the model's device."""
        wm, sim, states, horizon = world_model, self.simulator, self.states, self.horizon
        device = wm.device
        actor = PolicyWithGenerator(policy, generator)
        n = min(self.num_states, len(states))
        rows = torch.randperm(len(states), generator=generator, device=generator.device)[:n].cpu().numpy()

        def state_error(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
            return (wm.normalize_obs(pred) - wm.normalize_obs(true)).square().mean(-1)

        def reward_error(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
            return ((pred - true) / wm.reward_std).square()

        def tensor(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(x, device=device)

        qpos, qvel = states.qpos[rows], states.qvel[rows]
        start = tensor(sim.observe(qpos, qvel))

        # The floor (simulator vs file) and the one-step error for the dataset's action.
        data_actions = states.actions[rows]
        truth = sim.step(qpos, qvel, data_actions)
        true_next, true_reward = tensor(truth.next_observations), tensor(truth.rewards)
        true_terminal = tensor(truth.terminated)
        out: dict[str, torch.Tensor] = {
            "sim_floor_state_mse": state_error(true_next, tensor(states.next_observations[rows])).mean(),
            "sim_floor_reward_mse": reward_error(true_reward, tensor(states.rewards[rows])).mean(),
        }
        pred_next, pred_reward, pred_terminal = wm.step(start, tensor(data_actions), generator)
        out["onestep_state_mse_data"] = state_error(pred_next, true_next).mean()
        out["onestep_reward_mse_data"] = reward_error(pred_reward, true_reward).mean()
        out["onestep_terminal_agreement_data"] = (pred_terminal == true_terminal).float().mean()

        # H steps of the policy in the simulator; the model predicts each step twice in one call:
        # from the simulator's state (one-step, for eps) and from its own open-loop state.
        shape = (horizon, n)
        valid = torch.empty(shape, dtype=torch.bool, device=device)
        one_state, one_reward, one_agree = (torch.empty(shape, device=device) for _ in range(3))
        open_state, open_reward, open_model_reward, sim_reward = (torch.empty(shape, device=device)
                                                                  for _ in range(4))
        visited = torch.empty(horizon, n, wm.obs_dim, device=device)
        alive = np.ones(n, bool)
        sim_obs, model_obs = start, start
        for t in range(horizon):
            actions = actor.act(sim_obs, deterministic=self.deterministic_policy)
            step = sim.step(qpos, qvel, actions.cpu().numpy(), alive)
            next_sim = tensor(step.next_observations)
            reward, terminal = tensor(step.rewards), tensor(step.terminated)
            pred_next, pred_reward, pred_terminal = wm.step(torch.cat([sim_obs, model_obs]),
                                                            torch.cat([actions, actions]), generator)
            valid[t], visited[t], sim_reward[t] = tensor(alive), sim_obs, reward
            one_state[t] = state_error(pred_next[:n], next_sim)
            one_reward[t] = reward_error(pred_reward[:n], reward)
            one_agree[t] = (pred_terminal[:n] == terminal).float()
            open_state[t] = state_error(pred_next[n:], next_sim)
            open_reward[t] = reward_error(pred_reward[n:], reward)
            open_model_reward[t] = pred_reward[n:]
            alive = alive & ~step.terminated
            qpos, qvel = step.qpos, step.qvel
            sim_obs, model_obs = next_sim, pred_next[n:]

        mask = valid.float()
        per_step_count = mask.sum(1)

        def per_step(x: torch.Tensor) -> torch.Tensor:  # (H,) mean over the trajectories alive at t (NaN if none)
            return (x * mask).sum(1) / per_step_count

        def over_steps_max(x: torch.Tensor) -> torch.Tensor:  # max_t E_{s_t, a_t}[x], Defs. 4.1-4.2
            return torch.where(per_step_count > 0, per_step(x), -torch.inf).max()

        def masked_mean(x: torch.Tensor) -> torch.Tensor:
            return (x * mask).sum() / mask.sum()

        discounts = self.gamma ** torch.arange(horizon, device=device, dtype=torch.float32)
        out["onestep_state_mse_policy"] = one_state[0].mean()
        out["onestep_reward_mse_policy"] = one_reward[0].mean()
        out["onestep_terminal_agreement_policy"] = one_agree[0].mean()
        state_per_step, reward_per_step = per_step(open_state), per_step(open_reward)
        for t in range(horizon):
            out[f"rollout_state_mse_t{t + 1}"] = state_per_step[t]
        for t in range(horizon):
            out[f"rollout_reward_mse_t{t + 1}"] = reward_per_step[t]
        out["rollout_state_mse_mean"] = masked_mean(open_state)
        out["rollout_reward_mse_mean"] = masked_mean(open_reward)
        out["rollout_length_mean"] = per_step_count.sum() / n
        out["J_H"] = (sim_reward * mask * discounts[:, None]).sum(0).mean()
        out["J_openloop_H"] = (open_model_reward * mask * discounts[:, None]).sum(0).mean()
        rollouts = generate_rollouts(wm, actor, start, horizon, self.gamma, generator,
                                     deterministic_policy=self.deterministic_policy)
        out["J_hat_H"] = rollouts.stats["model_return"]
        out["return_gap"] = (out["J_H"] - out["J_hat_H"]).abs()

        # Theorem 4.4's errors on the policy's states: MSE (the paper's heuristic) and tolerance-ball TV.
        tol = self.tolerance
        out["eps_m"], out["eps_r"] = over_steps_max(one_state), over_steps_max(one_reward)
        out["eps_m_tv"] = over_steps_max((one_state > tol ** 2).float())
        out["eps_r_tv"] = over_steps_max((one_reward > tol ** 2).float())
        if previous_policy is None:
            out["eps_pi"] = out["eps_pi_max"] = torch.zeros((), device=device)
        else:
            tv = policy_tv_distance(PolicyWithGenerator(previous_policy, generator), actor, visited[valid],
                                    TV_ACTION_SAMPLES)
            out["eps_pi"], out["eps_pi_max"] = tv["eps_pi"], tv["eps_pi_max"]
        r_max, gamma = wm.reward_abs_max, self.gamma
        out["r_max"] = r_max
        for suffix, eps_m, eps_r in (("", out["eps_m"], out["eps_r"]), ("_tv", out["eps_m_tv"], out["eps_r_tv"])):
            out[f"C_eq9{suffix}"] = return_gap_bound(eps_r, eps_m, out["eps_pi"], r_max, gamma)
            out[f"C_appendix{suffix}"] = return_gap_bound_appendix(eps_r, eps_m, out["eps_pi"], r_max, gamma)
            out[f"C_appendix_H{suffix}"] = return_gap_bound_appendix(eps_r, eps_m, out["eps_pi"], r_max, gamma,
                                                                     horizon)
        names = list(out)
        values = torch.stack([out[name].float().reshape(()) for name in names]).tolist()  # one host sync
        report = {PREFIX + name: value for name, value in zip(names, values)}
        report[PREFIX + "states"] = n
        return report

    def close(self) -> None:
        self.simulator.close()
