"""Method names of the harness and what each one runs.

A method is an offline RL learner plus, optionally, a source of synthetic data:

- ``<learner>``          plain offline RL on the dataset (e.g. ``iql``, ``sac``, ``td3bc``);
- ``adept-<learner>``    ADEPT (Algorithm 1): guided-diffusion rollouts with the current policy and
                         importance-sampled world-model updates (``adept-bc`` is the Section 5.2
                         ablation that replaces policy improvement with behaviour cloning);
- ``diff-<learner>``     Diff+X (Figure 3): the same rollouts from a world model trained once before
                         training, never refitted, no importance sampling.

A ``_<label>`` suffix names a variant of a method run with config overrides (Table 4:
``adept-sac_K5``, ``adept-sac_noclip``...). The label only names the run; the overrides come from
the run's config.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SyntheticKind = Literal["adept", "diff"]
PREFIXES: dict[str, SyntheticKind] = {"adept-": "adept", "diff-": "diff"}


@dataclass(frozen=True)
class MethodSpec:
    name: str                          # as given, label included ("adept-sac_K5")
    base: str                          # without the label ("adept-sac")
    learner: str                       # registry name of the offline RL learner ("sac")
    synthetic: SyntheticKind | None    # None: offline data only

    @property
    def needs_world_model(self) -> bool:
        return self.synthetic is not None

    @property
    def needs_behavior_policy(self) -> bool:
        return self.synthetic == "adept"


def parse_method(name: str) -> MethodSpec:
    """``"adept-iql"`` -> MethodSpec(learner="iql", synthetic="adept"); unknown learners are rejected."""
    from baselines import LEARNERS

    base = name.split("_", 1)[0]
    synthetic: SyntheticKind | None = None
    learner = base
    for prefix, kind in PREFIXES.items():
        if base.startswith(prefix):
            synthetic, learner = kind, base[len(prefix):]
            break
    if learner not in LEARNERS:
        valid = sorted(LEARNERS)
        examples = valid + [f"adept-{n}" for n in valid] + [f"diff-{n}" for n in valid]
        raise ValueError(f"unknown method {name!r}: valid methods are {examples} "
                         f"(optionally with a _label suffix for variants, e.g. adept-sac_K5)")
    return MethodSpec(name=name, base=base, learner=learner, synthetic=synthetic)
