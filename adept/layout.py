"""Where the workflow puts every artefact, in one place for the Snakemake rules and Python alike.

Each function gives the path of one kind of file. Left at their defaults, `env`, `dataset` and
`seed` stay Snakemake wildcards, so a rule's output is e.g.

    output: final=layout.run_file(RUNS, "mopo")   # results/runs/mopo/{env}-{dataset}/seed{seed}/final.json

and the Python side (the runner's defaults, reporting, tests) calls the same function with values.
The folder inside a run (eval.csv, final.json, ...) is adept.run_outputs's.
"""
from __future__ import annotations

from pathlib import Path

from adept.run_outputs import FINAL, run_dir

ENV, DATASET, SEED = "{env}", "{dataset}", "{seed}"


def task_seed(env: str = ENV, dataset: str = DATASET, seed: int | str = SEED) -> str:
    """`<env>-<dataset>/seed<seed>`: how every per-task artefact's folder ends."""
    return f"{env}-{dataset}/seed{seed}"


def dataset_file(data_dir: str | Path, source: str, env: str, dataset: str, *, size: int | None = None,
                 seed: int = 0) -> str:
    """The hdf5 file of (env, dataset) for a source: D4RL's own file name under `<data_dir>/d4rl/`, or
    the generated file `adept datasets generate` writes (and `adept train --source generated` finds)."""
    if source == "d4rl":
        from adept.data.d4rl import d4rl_filename

        return f"{data_dir}/d4rl/{d4rl_filename(env, dataset)}"
    if source == "generated":
        from adept.data.generated import generated_filename

        return f"{data_dir}/generated/{generated_filename(env, dataset, seed, size)}"
    raise ValueError(f"the workflow reads datasets of the sources 'd4rl' and 'generated', not {source!r}")


def method_config_file(results_dir: str | Path, method: str = "{method}") -> str:
    """The run config (`adept train --config`) of a method, shared by all its runs."""
    return f"{results_dir}/configs/{method}.yaml"


def behavior_policy_file(results_dir: str | Path, env: str = ENV, dataset: str = DATASET,
                         seed: int | str = SEED) -> str:
    """pi_D, the behaviour policy fitted to D (`adept behavior-policy`)."""
    return f"{results_dir}/behavior/{task_seed(env, dataset, seed)}/policy.pt"


def world_model_file(results_dir: str | Path, tag: str = "{tag}", env: str = ENV, dataset: str = DATASET,
                     seed: int | str = SEED) -> str:
    """The guided diffusion world model (`adept world-model`); `tag` names its config (hash)."""
    return f"{results_dir}/world_models/{tag}/{task_seed(env, dataset, seed)}/model.pt"


def ensemble_file(results_dir: str | Path, env: str = ENV, dataset: str = DATASET, seed: int | str = SEED) -> str:
    """MOPO/COMBO's dynamics ensemble (`adept ensemble`)."""
    return f"{results_dir}/ensembles/{task_seed(env, dataset, seed)}/ensemble.pt"


def synther_file(results_dir: str | Path, env: str = ENV, dataset: str = DATASET, seed: int | str = SEED) -> str:
    """SynthER's transition diffusion model (`adept synther`)."""
    return f"{results_dir}/synther/{task_seed(env, dataset, seed)}/synther.pt"


def run_file(runs_dir: str | Path, method: str = "{method}", name: str = FINAL, env: str = ENV,
             dataset: str = DATASET, seed: int | str = SEED) -> str:
    """A file of a run's folder (final.json by default; adept.run_outputs names the others)."""
    return str(run_dir(runs_dir, method, env, dataset, seed) / name)


def task_log(logs_dir: str | Path, *stage: str, env: str = ENV, dataset: str = DATASET,
             seed: int | str = SEED) -> str:
    """`<logs>/<stage...>/<env>-<dataset>/seed<seed>.log`: the log of one per-task job."""
    return "/".join([str(logs_dir), *stage, f"{task_seed(env, dataset, seed)}.log"])
