"""Method names of the harness and what each one runs.

A method is an offline RL learner plus, optionally, a source of synthetic data:

- ``<learner>``          plain offline RL on the dataset (e.g. ``iql``, ``sac``, ``td3bc``);
- ``adept-<learner>``    ADEPT (Algorithm 1): guided-diffusion rollouts with the current policy and
                         importance-sampled world-model updates (``adept-bc`` is the Section 5.2
                         ablation that replaces policy improvement with behaviour cloning);
- ``diff-<learner>``     Diff+X (Figure 3): the same rollouts from a world model trained once before
                         training, never refitted, no importance sampling;
- ``mopo``, ``combo``    the model-based baselines of Table 1: short rollouts in a fitted dynamics
                         ensemble (adept.model_rollouts) with SAC on MOPO's penalised rewards, or with
                         COMBO's conservative critic (baselines/combo.py);
- ``synther-<learner>``  SynthER (Table 1): the learner on transitions sampled once, before training,
                         from a diffusion model of (s, a, r, s', terminal) fitted on D (adept.synther);
- ``diffuser``           Diffuser (Table 1): a trajectory diffusion model and its value function trained
                         by the runner's loop, planning at evaluation (baselines/diffuser.py).

A ``_<label>`` suffix names a variant of a method run with config overrides (Table 4:
``adept-sac_K5``, ``adept-sac_noclip``...). The label only names the run; the overrides come from
the run's config.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

SyntheticKind = Literal["adept", "diff", "ensemble", "synther"]
PREFIXES: dict[str, SyntheticKind] = {"adept-": "adept", "diff-": "diff", "synther-": "synther"}
# How tables and figures name a prefixed method, from its learner's label: ADEPT-IQL, Diff+SAC, SynthER (IQL).
PREFIX_LABELS: dict[str, str] = {"adept-": "ADEPT-{}", "diff-": "Diff+{}", "synther-": "SynthER ({})"}
# Methods with a name of their own: method -> the learner trained on the dynamics ensemble's rollouts.
MODEL_BASED: dict[str, str] = {"mopo": "sac", "combo": "combo"}
MODEL_BASED_LABELS: dict[str, str] = {"mopo": "MOPO", "combo": "COMBO"}
# The `_<label>` suffix of a variant (Table 4: adept-sac_K5, adept-sac_noclip).
VARIANT_SUFFIX = r"_[A-Za-z0-9.+-]+"
# The prefixes of methods run by the workflow's generic `train` rule; the others (synther-, and the
# model-based names) need an artefact of their own and come with a drop-in rule (workflow/rules/baselines/).
TRAIN_RULE_PREFIXES = ("adept-", "diff-")
# Learners defined only with model rollouts: no <learner>, adept-<learner> or diff-<learner> method.
MODEL_ROLLOUT_LEARNERS = frozenset({"combo"})
# Learners that are a method on their own only (no adept-, diff- or synther- prefix): Diffuser plans with
# its own model and has no action density for importance weights.
STANDALONE_LEARNERS = frozenset({"diffuser"})


@dataclass(frozen=True)
class MethodSpec:
    name: str                          # as given, label included ("adept-sac_K5")
    base: str                          # without the label ("adept-sac")
    learner: str                       # registry name of the offline RL learner ("sac")
    synthetic: SyntheticKind | None    # None: offline data only

    @property
    def needs_world_model(self) -> bool:
        """The guided diffusion world model (adept-*, diff-*)."""
        return self.synthetic in ("adept", "diff")

    @property
    def needs_ensemble(self) -> bool:
        """The dynamics ensemble (mopo, combo)."""
        return self.synthetic == "ensemble"

    @property
    def needs_synther(self) -> bool:
        """The SynthER transition diffusion model (synther-*)."""
        return self.synthetic == "synther"

    @property
    def needs_behavior_policy(self) -> bool:
        return self.synthetic == "adept"


def parse_method(name: str) -> MethodSpec:
    """``"adept-iql"`` -> MethodSpec(learner="iql", synthetic="adept"); unknown learners are rejected."""
    from baselines import LEARNERS

    base = name.split("_", 1)[0]
    if base in MODEL_BASED:
        return MethodSpec(name=name, base=base, learner=MODEL_BASED[base], synthetic="ensemble")
    synthetic: SyntheticKind | None = None
    learner = base
    for prefix, kind in PREFIXES.items():
        if base.startswith(prefix):
            synthetic, learner = kind, base[len(prefix):]
            break
    if (learner not in LEARNERS or learner in MODEL_ROLLOUT_LEARNERS
            or (synthetic is not None and learner in STANDALONE_LEARNERS)):
        valid = sorted(set(LEARNERS) - MODEL_ROLLOUT_LEARNERS)
        prefixable = [n for n in valid if n not in STANDALONE_LEARNERS]
        examples = valid + [f"{prefix}{n}" for prefix in PREFIXES for n in prefixable] + sorted(MODEL_BASED)
        raise ValueError(f"unknown method {name!r}: valid methods are {examples} "
                         f"(optionally with a _label suffix for variants, e.g. adept-sac_K5)")
    return MethodSpec(name=name, base=base, learner=learner, synthetic=synthetic)


def train_rule_learners() -> list[str]:
    """Learners X with methods X, adept-X and diff-X (everything but model-rollout and standalone learners)."""
    from baselines import LEARNERS

    return sorted(set(LEARNERS) - MODEL_ROLLOUT_LEARNERS - STANDALONE_LEARNERS)


def train_rule_pattern() -> str:
    """Regex of the methods the workflow's `train` rule runs: <learner>, adept-<learner>, diff-<learner>,
    each with an optional variant suffix. Snakemake's wildcard constraint and the checks use this one."""
    prefixes = "|".join(TRAIN_RULE_PREFIXES)
    return rf"(?:{prefixes})?(?:{'|'.join(train_rule_learners())})(?:{VARIANT_SUFFIX})?"


def is_train_rule_method(name: str) -> bool:
    return re.fullmatch(train_rule_pattern(), name) is not None


def method_label(method: str) -> str:
    """Display name in the paper's style: adept-iql -> ADEPT-IQL, diff-sac -> Diff+SAC, td3bc -> TD3+BC,
    mopo -> MOPO. Names the harness does not know (drop-in baselines, variants) are shown as they are."""
    from baselines import LEARNERS

    def learner_label(name: str) -> str | None:
        return LEARNERS[name][0].label if name in LEARNERS else None

    if method in MODEL_BASED_LABELS:
        return MODEL_BASED_LABELS[method]
    if learner_label(method):
        return learner_label(method)
    for prefix, template in PREFIX_LABELS.items():
        learner = method.removeprefix(prefix)
        if method.startswith(prefix) and learner_label(learner):
            return template.format(learner_label(learner))
    return method
