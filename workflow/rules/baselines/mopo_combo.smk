# Drop-in baselines (contract: README.md in this folder): MOPO (Yu et al. 2020) and COMBO (Yu et al.
# 2021), Table 1's model-based columns, run by the harness under the same protocol as every other column.
#
# One probabilistic dynamics ensemble per (env, dataset, seed), fitted once to held-out convergence
# (`python -m adept ensemble`, config sections `ensemble` and `ensemble_training`) and shared by
# both methods. Each run is `python -m adept train --method mopo|combo --ensemble ...` with the
# method's config file (the `method_config` rule: run, learner, model_rollouts, method_overrides)
# and its per-dataset settings as --set flags (`task_overrides`: MOPO's h and lambda, COMBO's h and
# beta; sources in docs/notes/model-based-baselines.md).

from adept.ensemble import EnsembleConfig
from adept.ensemble_training import EnsembleFitConfig
from adept.model_rollouts import check_run_configs

ENSEMBLES = f"{RESULTS}/ensembles"

# Checked before any job starts: the ensemble's sections, and every mopo / combo run of the grid with
# its per-dataset settings (MOPO needs lambda > 0, COMBO none, both the fraction rule).
from_dict(EnsembleConfig, config["ensemble"], "ensemble")
from_dict(EnsembleFitConfig, fit_settings("ensemble_training")["ensemble_training"], "ensemble_training")
check_run_configs({(method, env, dataset): merge(train_config(method), task_overrides(method, env, dataset))
                   for method in ("mopo", "combo") if method in CONFIGURED_METHODS
                   for env in ENVS for dataset in DATASETS})


localrules:
    ensemble_config,


rule ensemble_config:
    """The settings file of the fits (sections ensemble and ensemble_training); a change refits every ensemble."""
    output:
        yaml=f"{ENSEMBLES}/config.yaml",
    log:
        f"{LOGS}/ensembles/config.log",
    params:
        text=yaml.safe_dump(fit_settings("ensemble", "ensemble_training"), sort_keys=False),
    conda:
        CONDA_ENV
    shell:
        WRITE_PARAMS_TEXT.format(output="{output.yaml}")


rule ensemble:
    """Fit the dynamics ensemble on D to held-out convergence and pick its elites. The command keeps a
    resume checkpoint (ensemble.ckpt) beside ensemble.pt; Snakemake never deletes it."""
    input:
        data=dataset_path,
        config=rules.ensemble_config.output.yaml,
    output:
        model=layout.ensemble_file(RESULTS),
    log:
        layout.task_log(LOGS, "ensembles"),
    params:
        options=fit_run_flags("ensemble_training"),
        device=config["device"],
        gpu_lock=gpu_lock,
    threads: job_resources("ensemble")["threads"]
    resources:
        gpu=job_resources("ensemble")["gpu"],
        mem_mb=job_resources("ensemble")["mem_mb"],
        runtime=job_resources("ensemble")["runtime"],
    conda:
        CONDA_ENV
    shell:
        "{params.gpu_lock} python -m adept ensemble --data {input.data} --env {wildcards.env} "
        "--dataset {wildcards.dataset} --seed {wildcards.seed} --config {input.config} {params.options} "
        "--out {output.model} --device {params.device} > {log} 2>&1"


# The two runs differ only in the method name: one shell command.
MODEL_BASED_TRAIN = (
    "{params.gpu_lock} python -m adept train --method {params.method} --env {wildcards.env} "
    "--dataset {wildcards.dataset} --seed {wildcards.seed} --data {input.data} --source {params.source} "
    "--config {input.config} {params.task} --ensemble {input.ensemble} --out-dir {params.out_dir} "
    "--device {params.device} > {log} 2>&1"
)


rule baseline_mopo:
    """MOPO: SAC on 5% real / 95% model data, model rewards penalised by lambda * max_i ||sigma_i(s, a)||."""
    input:
        data=dataset_path,
        config=layout.method_config_file(RESULTS, "mopo"),
        ensemble=rules.ensemble.output.model,
    output:
        final=layout.run_file(RUNS, "mopo"),
    log:
        layout.task_log(LOGS, "baselines", "mopo"),
    params:
        method="mopo",
        out_dir=lambda wildcards, output: Path(output.final).parent,
        task=lambda wildcards: task_override_flags("mopo", wildcards.env, wildcards.dataset),
        source=SOURCE,
        device=config["device"],
        gpu_lock=gpu_lock,
    threads: job_resources("train")["threads"]
    resources:
        gpu=job_resources("train")["gpu"],
        mem_mb=job_resources("train")["mem_mb"],
        runtime=job_resources("train")["runtime"],
    conda:
        CONDA_ENV
    shell:
        MODEL_BASED_TRAIN


rule baseline_combo:
    """COMBO: a conservative critic (Q down on model states, up on data) on 50% real / 50% model data."""
    input:
        data=dataset_path,
        config=layout.method_config_file(RESULTS, "combo"),
        ensemble=rules.ensemble.output.model,
    output:
        final=layout.run_file(RUNS, "combo"),
    log:
        layout.task_log(LOGS, "baselines", "combo"),
    params:
        method="combo",
        out_dir=lambda wildcards, output: Path(output.final).parent,
        task=lambda wildcards: task_override_flags("combo", wildcards.env, wildcards.dataset),
        source=SOURCE,
        device=config["device"],
        gpu_lock=gpu_lock,
    threads: job_resources("train")["threads"]
    resources:
        gpu=job_resources("train")["gpu"],
        mem_mb=job_resources("train")["mem_mb"],
        runtime=job_resources("train")["runtime"],
    conda:
        CONDA_ENV
    shell:
        MODEL_BASED_TRAIN
