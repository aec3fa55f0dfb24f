# Helpers shared by the rules: where every artefact lives, the config each job gets, the targets.
#
# The validated config (see the Snakefile) is a grid (envs x datasets x seeds) plus the methods of
# each output: Table 1's columns on the whole grid, Figure 3's curves on figure3.env, Table 4
# (ADEPT-SAC and its variants) on the whole grid. `python -m adept train` runs the harness's own
# methods; a drop-in baseline (workflow/rules/baselines/) brings a rule that writes its run outputs.

import hashlib
import json
import os
import re
import shlex
from pathlib import Path

import yaml

from adept.closed_loop import ClosedLoopConfig
from adept.config import ConfigError, from_dict, merge
from adept import layout
from adept.methods import is_train_rule_method, parse_method, train_rule_pattern
from adept.runner import RunConfig, TrainConfig
from adept.world_model import ARCHITECTURE_KEYS, WorldModelConfig
from baselines import learner_config

DATA_DIR = config["data"]["dir"]
SOURCE = config["data"]["source"]
RESULTS = config["results_dir"]
RUNS = f"{RESULTS}/runs"
LOGS = config["logs_dir"]
ENVS = config["envs"]
DATASETS = config["datasets"]
SEEDS = config["seeds"]
VARIANTS = config["variants"]

TABLE1_METHODS = config["table1"]["methods"]
FIGURE3_ENV = config["figure3"]["env"]
FIGURE3_METHODS = config["figure3"]["methods"]
TABLE4_BASELINE = config["table4"]["baseline"]
TABLE4_VARIANTS = config["table4"]["variants"]
TABLE4_METHODS = [TABLE4_BASELINE, *TABLE4_VARIANTS] if TABLE4_VARIANTS else []
CONFIGURED_METHODS = list(dict.fromkeys([*TABLE1_METHODS, *FIGURE3_METHODS, *TABLE4_METHODS]))

CONDA_ENV = f"{workflow.basedir}/workflow/envs/adept.yaml"  # absolute: rules live in different folders
GPU_LOCK = f"{workflow.basedir}/workflow/scripts/gpu_lock.py"

# The methods of the `train` rule (`python -m adept train`) - <learner>, adept-<learner>, diff-<learner>, each
# with an optional _<label> for variants (adept.methods.train_rule_pattern). Other names must come from a
# drop-in baseline rule (mopo and combo, which `adept train` also runs, come from
# workflow/rules/baselines/mopo_combo.smk; synther-<learner> and diffuser from synther.smk and diffuser.smk).
TRAIN_METHOD_PATTERN = train_rule_pattern()


wildcard_constraints:
    env="|".join(ENVS),
    dataset="|".join(re.escape(d) for d in DATASETS),
    seed=r"\d+",
    tag=r"wm-[0-9a-f]{10}",


# ---------------------------------------------------------------------------------- method configs

def variant_of(method):
    """(base method, overrides) of a variant name; (method, {}) for any other method."""
    if method in VARIANTS:
        return VARIANTS[method]["method"], VARIANTS[method].get("overrides", {})
    if "_" in method:
        raise ValueError(f"method {method!r} has a _label suffix but is not defined under `variants:` in the "
                         "config; add it there (method: <base method>, overrides: ...) or drop the suffix")
    return method, {}


def method_spec(method):
    """adept.methods.MethodSpec of the method's base (learner, needs a world model / pi_D)."""
    return parse_method(variant_of(method)[0])


def method_sections(method):
    """The method's full run config: shared sections and its learner's section, then the overrides of
    its base method (method_overrides) and of the variant; later ones win."""
    base, variant_overrides = variant_of(method)
    spec = parse_method(base)
    sections = {"run": config["run"], "learner": config["learners"].get(spec.learner, {})}
    if spec.needs_world_model:
        sections["world_model"] = config["world_model"]
        sections["adept"] = config["adept"]
    if spec.needs_ensemble:
        sections["model_rollouts"] = config["model_rollouts"]
    if spec.needs_synther:
        sections["upsampling"] = config["upsampling"]
    sections = merge(sections, config["method_overrides"].get(base, {}))
    return merge(sections, variant_overrides)


def task_overrides(method, env, dataset):
    """The sections `task_overrides` sets for (method, env-dataset): the base method's, then the variant's."""
    base = variant_of(method)[0]
    task = f"{env}-{dataset}"
    per_method = config["task_overrides"]
    values = per_method.get(base, {}).get(task, {})
    return merge(values, per_method.get(method, {}).get(task, {})) if method != base else values


def task_override_flags(method, env, dataset):
    """`--set SECTION.KEY=VALUE` flags of the method's per-task settings (e.g. MOPO's h and lambda)."""
    def dotted(values, prefix=""):
        for key, value in values.items():
            if isinstance(value, dict) and value:
                yield from dotted(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    return set_flags(dict(dotted(task_overrides(method, env, dataset))))


def task_flags(wildcards):
    """params input function of a rule with a {method} wildcard (the train rule)."""
    return task_override_flags(wildcards.method, wildcards.env, wildcards.dataset)


def train_config(method):
    """The YAML `python -m adept train --config` gets. Its world_model section keeps the keys that may
    change on a trained model; the architecture keys choose which world model is trained instead."""
    sections = method_sections(method)
    if "world_model" in sections:
        sections["world_model"] = {k: v for k, v in sections["world_model"].items() if k not in ARCHITECTURE_KEYS}
    return sections


def world_model_config(method):
    """The world_model section a method's model is trained with: the shared section plus the
    architecture keys of the method's own overrides (e.g. K for Table 4's K=5 and K=20)."""
    own = method_sections(method).get("world_model", {})
    return {"world_model": merge(config["world_model"], {k: v for k, v in own.items() if k in ARCHITECTURE_KEYS})}


def world_model_tag(method):
    """Hash of all the world-model training depends on: ADEPT-X and Diff+X share one model, K variants do not."""
    text = json.dumps([world_model_config(method), config["world_model_training"]], sort_keys=True)
    return f"wm-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def world_model_config_of_tag(tag):
    """The settings file of world model `tag`'s fit: its world_model section and the world_model_training one."""
    for method in CONFIGURED_METHODS:
        if is_train_rule_method(method) and method_spec(method).needs_world_model and world_model_tag(method) == tag:
            return {**world_model_config(method), **fit_settings("world_model_training")}
    raise ValueError(f"no configured method uses world model {tag!r}; it belongs to another config")


# Keys of the fit sections (world_model_training, ensemble_training, synther_training) that say how the
# fit is run, not what it fits. They become flags of the command (--no-resume), never settings-file entries.
FIT_RUN_FLAGS = ("no_resume",)


def check_sections():
    """Every section on its own against the dataclass or command it configures, used or not, so that
    a misspelled key (e.g. `world_model_training: {step: 100}`) fails `snakemake -n` naming the key
    and the valid ones, and never reaches a command line."""
    from adept.behavior_policy_training import BehaviorPolicyFitConfig
    from adept.world_model_training import WorldModelFitConfig

    checks = [
        ("run", lambda: from_dict(RunConfig, config["run"], "run")),
        ("world_model", lambda: from_dict(WorldModelConfig, config["world_model"], "world_model")),
        ("adept", lambda: from_dict(ClosedLoopConfig, config["adept"], "adept")),
        ("world_model_training", lambda: from_dict(
            WorldModelFitConfig, fit_settings("world_model_training")["world_model_training"], "world_model_training")),
        ("behavior_policy", lambda: from_dict(BehaviorPolicyFitConfig, config["behavior_policy"], "behavior_policy")),
    ]
    checks += [(f"learners.{name}", lambda name=name, values=values: learner_config(name, values))
               for name, values in config["learners"].items()]
    for section, check in checks:
        try:
            check()
        except (ConfigError, ValueError) as err:
            raise ValueError(f"config section {section} is invalid: {err}") from None


def check_config():
    """Cross-field checks, every section, and every method's sections (configured methods, all
    variants, all method_overrides), so a typo fails before any job starts."""
    unknown = [v for v in TABLE4_VARIANTS if v not in VARIANTS]
    if unknown:
        raise ValueError(f"table4.variants {unknown} are not defined under `variants:` (defined: {sorted(VARIANTS)})")
    if FIGURE3_METHODS and FIGURE3_ENV not in ENVS:
        raise ValueError(f"figure3.env {FIGURE3_ENV!r} is not one of the configured envs {ENVS}")
    methods = list(dict.fromkeys([*CONFIGURED_METHODS, *VARIANTS, *config["method_overrides"]]))
    for method in filter(is_train_rule_method, methods):
        try:
            sections = method_sections(method)
            TrainConfig.from_dict(train_config(method))
            learner_config(method_spec(method).learner, sections["learner"])
            from_dict(WorldModelConfig, sections.get("world_model", {}), "world_model")
        except (ConfigError, ValueError) as err:
            raise ValueError(f"config of method {method!r} is invalid: {err}") from None
    check_task_overrides()
    check_sections()


def check_task_overrides():
    """task_overrides: methods `adept train` runs, env-dataset keys, sections valid once merged."""
    from adept.data.schema import DATASET_NAMES
    from adept.envs import ENV_NAMES

    tasks = [f"{env}-{dataset}" for env in ENV_NAMES for dataset in DATASET_NAMES]
    for method, per_task in config["task_overrides"].items():
        try:
            spec = method_spec(method)
        except ValueError:
            raise ValueError(f"task_overrides.{method}: not a method `python -m adept train` runs; a drop-in "
                             "baseline takes its settings in its own rule") from None
        for task, overrides in per_task.items():
            if task not in tasks:
                raise ValueError(f"task_overrides.{method}.{task}: not an env-dataset pair; valid ones are {tasks}")
            try:
                sections = merge(train_config(method), overrides)
                TrainConfig.from_dict(sections)
                learner_config(spec.learner, sections["learner"])
            except (ConfigError, ValueError) as err:
                raise ValueError(f"task_overrides.{method}.{task} is invalid: {err}") from None


def check_baselines_have_rules():
    """Every configured method that `adept train` does not run must be written by some rule."""
    produced = [str(f) for rule in workflow.rules for f in rule.output]
    for method in CONFIGURED_METHODS:
        if not is_train_rule_method(method) and not any(p.startswith(f"{RUNS}/{method}/") for p in produced):
            raise ValueError(
                f"method {method!r} is neither a harness method ({TRAIN_METHOD_PATTERN}) nor written by a "
                f"drop-in rule (no rule has the output {RUNS}/{method}/.../final.json); see "
                "workflow/rules/baselines/README.md")


# ------------------------------------------------------------------------------ inputs of the stages

def dataset_path(wildcards):
    """The hdf5 file of (env, dataset) for the configured source; one source never stands in for the other."""
    data = config["data"]
    return layout.dataset_file(DATA_DIR, SOURCE, wildcards.env, wildcards.dataset, size=data["size"], seed=data["seed"])


def behavior_policy_path(wildcards):
    return layout.behavior_policy_file(RESULTS, wildcards.env, wildcards.dataset, wildcards.seed)


def world_model_path(wildcards):
    return layout.world_model_file(RESULTS, world_model_tag(wildcards.method), wildcards.env, wildcards.dataset,
                                   wildcards.seed)


def train_inputs(wildcards):
    spec = method_spec(wildcards.method)
    inputs = {"data": dataset_path(wildcards), "config": layout.method_config_file(RESULTS, wildcards.method)}
    if spec.needs_world_model:
        inputs["world_model"] = world_model_path(wildcards)
    if spec.needs_behavior_policy:
        inputs["behavior_policy"] = behavior_policy_path(wildcards)
    return inputs


def model_flags(wildcards, input):
    flags = [f"--world-model {input.world_model}"] if "world_model" in input.keys() else []
    flags += [f"--behavior-policy {input.behavior_policy}"] if "behavior_policy" in input.keys() else []
    return " ".join(flags)


# ------------------------------------------------------------------------------------ command lines

def cli_flags(options):
    """{"log_every": 1000, "early_stop": True} -> "--log-every 1000 --early-stop" (false/null left out)."""
    flags = []
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            flags.append(flag)
        elif value is not False and value is not None:
            flags.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(flags)


def set_flags(options):
    """{"lr": 1e-4} -> "--set lr=0.0001"; values as JSON, which the commands parse as YAML."""
    return " ".join(f"--set {shlex.quote(f'{key}={json.dumps(value)}')}" for key, value in options.items())


def fit_settings(*sections):
    """The settings file of a fit command (`adept world-model`, `ensemble`, `synther`, `behavior-policy`
    --config): the config's sections of that fit (its model and its schedule), without FIT_RUN_FLAGS.
    Every fit takes its settings this one way; a change rewrites the file, so the fit runs again."""
    return {name: {k: v for k, v in config[name].items() if k not in FIT_RUN_FLAGS} for name in sections}


def fit_run_flags(section):
    """The FIT_RUN_FLAGS the fit section sets, as flags (no_resume: true -> --no-resume)."""
    return cli_flags({k: v for k, v in config[section].items() if k in FIT_RUN_FLAGS})


# Shell command of the rules that write a generated text file (params.text): atomically, without a
# Python process (a `run:` job would be a whole Snakemake process of its own).
WRITE_PARAMS_TEXT = "(printf '%s' {{params.text:q}} > {output}.tmp && mv {output}.tmp {output}) > {{log}} 2>&1"


def gpu_lock(wildcards, resources):
    """Prefix that pins a GPU job to GPU slots no other job holds, runs_per_gpu per GPU (a no-op on
    CPU-only machines and for gpu=0)."""
    return f"python {GPU_LOCK} --gpus {resources.gpu} --runs-per-gpu {config['runs_per_gpu']} --"


def job_resources(kind):
    return config["resources"][kind]


# ---------------------------------------------------------------------- generated medium datasets

COLLECTOR_DIR = f"{DATA_DIR}/collectors"


def collector_settings(wildcards):
    """`--set` flags of the shipped medium snapshot's training run (adept/collector_snapshots/
    manifest.json), so that a rebuilt run is that run: medium-replay must be the replay buffer of
    the collector whose snapshot generates medium. Other seeds train with the trainer's defaults."""
    manifest_path = Path(workflow.basedir, "adept/collector_snapshots/manifest.json")
    entry = json.loads(manifest_path.read_text()).get(wildcards.env) if manifest_path.is_file() else None
    if entry is None or int(entry["seed"]) != int(wildcards.data_seed):
        return ""

    def flatten(values, prefix=""):
        for key, value in values.items():
            if isinstance(value, dict):
                yield from flatten(value, f"{prefix}{key}.")
            elif value is not None:
                yield f"--set {prefix}{key}={value}"

    return " ".join(flatten(entry["online_config"]))


def generate_dataset_inputs(wildcards):
    if wildcards.dataset == "medium-replay":
        return {"replay": f"{COLLECTOR_DIR}/{wildcards.env}/seed{wildcards.data_seed}/replay.hdf5"}
    return {}


# ----------------------------------------------------------------------------------------- targets

def run_outputs(methods, envs):
    return [layout.run_file(RUNS, m, env=e, dataset=d, seed=s) for m in methods for e in envs for d in DATASETS
            for s in SEEDS]


def table1_runs(wildcards):
    return run_outputs(TABLE1_METHODS, ENVS)


def table4_runs(wildcards):
    return run_outputs(TABLE4_METHODS, ENVS)


def figure3_runs(wildcards):
    return run_outputs(FIGURE3_METHODS, [FIGURE3_ENV])


def all_runs(wildcards):
    return list(dict.fromkeys(table1_runs(wildcards) + figure3_runs(wildcards) + table4_runs(wildcards)))


# ------------------------------------------------------------------- the model-error figure

def method_envs(method):
    """The envs a configured method is run on: all of them for Table 1/4, figure3.env for Figure 3."""
    envs = list(ENVS) if method in TABLE1_METHODS or method in TABLE4_METHODS else []
    if method in FIGURE3_METHODS and FIGURE3_ENV not in envs:
        envs.append(FIGURE3_ENV)
    return envs


def model_error_pairs():
    """(adept-X, diff-X) pairs of the model-error figure: figure_model_error.pairs, or with `auto`
    every configured adept-X whose diff-X (same learner and variant label) is configured too."""
    pairs = config["figure_model_error"]["pairs"]
    if pairs == "auto":
        return [(m, f"diff-{m.removeprefix('adept-')}") for m in CONFIGURED_METHODS
                if m.startswith("adept-") and f"diff-{m.removeprefix('adept-')}" in CONFIGURED_METHODS]
    return [(pair["adept"], pair["diff"]) for pair in pairs]


def model_error_tasks():
    """(env, dataset) columns of the model-error figure: where both methods of some pair run."""
    envs = {e for adept, diff in model_error_pairs() for e in method_envs(adept) if e in method_envs(diff)}
    return [(e, d) for e in ENVS if e in envs for d in DATASETS]


def check_model_error_figure():
    for adept, diff in model_error_pairs():
        for method, kind in ((adept, "adept"), (diff, "diff")):
            if method not in CONFIGURED_METHODS:
                raise ValueError(f"figure_model_error.pairs names {method!r}, which no table or figure runs; add it "
                                 "to figure3.methods (or table1.methods) or remove the pair")
            if not is_train_rule_method(method) or method_spec(method).synthetic != kind:
                raise ValueError(f"figure_model_error.pairs: the `{kind}:` entry must be named {kind}-<learner>, "
                                 f"got {method!r}")
        if not set(method_envs(adept)) & set(method_envs(diff)):
            raise ValueError(f"figure_model_error.pairs: {adept!r} and {diff!r} share no env (runs of {adept}: "
                             f"{method_envs(adept)}, of {diff}: {method_envs(diff)})")


def model_error_runs(wildcards):
    return list(dict.fromkeys(
        layout.run_file(RUNS, m, env=e, dataset=d, seed=s) for adept, diff in model_error_pairs() for m in (adept, diff)
        for e, d in model_error_tasks() if e in method_envs(adept) and e in method_envs(diff) for s in SEEDS))


def model_error_report_spec():
    section = config["figure_model_error"]
    return {"pairs": [{"adept": adept, "diff": diff} for adept, diff in model_error_pairs()],
            "tasks": [list(task) for task in model_error_tasks()],
            "band": section["band"], "horizon_error": section["horizon_error"], "yscale": section["yscale"]}


# ----------------------------------------------------------------------------------------- reports

def report_targets():
    targets = [f"{RESULTS}/table1.{ext}" for ext in ("md", "tex", "html")] + [f"{RESULTS}/scores.csv"]
    targets += [f"{RESULTS}/profiles.png", f"{RESULTS}/profiles.pdf"]
    if model_error_pairs():
        targets += [f"{RESULTS}/figure_model_error.png", f"{RESULTS}/figure_model_error.pdf"]
    if TABLE4_METHODS:
        targets += [f"{RESULTS}/table4.{ext}" for ext in ("md", "tex", "html")]
    if FIGURE3_METHODS:
        targets += [f"{RESULTS}/figure3.png", f"{RESULTS}/figure3.pdf"]
    return targets


def report_spec():
    """The report spec (adept.reporting.spec): the grid and the columns of every table and the figure."""
    table4 = []
    if TABLE4_METHODS:
        table4 = [{"method": TABLE4_BASELINE, "label": "baseline", "paper_column": "baseline"}]
        table4 += [{"method": v, "label": VARIANTS[v].get("label", v), "paper_column": VARIANTS[v].get("paper_column")}
                   for v in TABLE4_VARIANTS]
    return {
        "runs_dir": os.path.relpath(RUNS, RESULTS), "envs": ENVS, "datasets": DATASETS, "seeds": SEEDS, "labels": config["labels"],
        "table1": {"methods": TABLE1_METHODS},
        "table4": {"columns": table4},
        "figure3": {"env": FIGURE3_ENV, "methods": FIGURE3_METHODS, "band": config["figure3"]["band"]},
        "figure_model_error": model_error_report_spec(),
        "bootstrap": config["bootstrap"],
    }


check_config()
check_model_error_figure()
