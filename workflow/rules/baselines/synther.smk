# Drop-in baseline (contract: README.md in this folder): SynthER (Lu et al. 2023), Table 1's column
# "SynthER", run by the harness under the same protocol as every other column.
#
# One transition diffusion model per (env, dataset, seed), fitted once (`python -m adept synther`, config
# sections `synther` and `synther_training`) and shared by every synther-<learner> method. Each run is
# `python -m adept train --method synther-<learner> --synther ...` with the method's config file (the
# `method_config` rule: run, learner, upsampling, method_overrides): before the first update it fills
# D-hat with upsampling.num_samples transitions from the model, then trains the learner on them.

from adept.synther import SyntherConfig
from adept.synther_training import SyntherFitConfig

SYNTHER_MODELS = f"{RESULTS}/synther"
SYNTHER_BASELINES = ("synther-td3bc", "synther-iql")  # SynthER's offline results: TD3+BC and IQL


# Checked before any job starts: the SynthER sections, and the run config of every configured
# synther-<learner> on every task of the grid.
from_dict(SyntherConfig, config["synther"], "synther")
from_dict(SyntherFitConfig, fit_settings("synther_training")["synther_training"], "synther_training")
for checked, task_env, task_dataset in [(m, e, d) for m in SYNTHER_BASELINES if m in CONFIGURED_METHODS
                                        for e in ENVS for d in DATASETS]:
    try:
        learner_config(method_spec(checked).learner, TrainConfig.from_dict(
            merge(train_config(checked), task_overrides(checked, task_env, task_dataset))).learner)
    except (ConfigError, ValueError) as err:
        raise ValueError(f"config of method {checked!r} on {task_env}-{task_dataset} is invalid: {err} (set it in "
                         f"method_overrides.{checked} or task_overrides.{checked}.{task_env}-{task_dataset})") from None


localrules:
    synther_config,


rule synther_config:
    """The settings file of the fits (sections synther and synther_training); a change refits every model."""
    output:
        yaml=f"{SYNTHER_MODELS}/config.yaml",
    log:
        f"{LOGS}/synther/config.log",
    params:
        text=yaml.safe_dump(fit_settings("synther", "synther_training"), sort_keys=False),
    conda:
        CONDA_ENV
    shell:
        WRITE_PARAMS_TEXT.format(output="{output.yaml}")


rule synther:
    """Fit SynthER's diffusion model over (s, a, r, s', terminal) on D. The command keeps a resume checkpoint
    (synther.ckpt) beside synther.pt; Snakemake never deletes it."""
    input:
        data=dataset_path,
        config=rules.synther_config.output.yaml,
    output:
        model=layout.synther_file(RESULTS),
    log:
        layout.task_log(LOGS, "synther"),
    params:
        options=fit_run_flags("synther_training"),
        device=config["device"],
        gpu_lock=gpu_lock,
    threads: job_resources("synther")["threads"]
    resources:
        gpu=job_resources("synther")["gpu"],
        mem_mb=job_resources("synther")["mem_mb"],
        runtime=job_resources("synther")["runtime"],
    conda:
        CONDA_ENV
    shell:
        "{params.gpu_lock} python -m adept synther --data {input.data} --env {wildcards.env} "
        "--dataset {wildcards.dataset} --seed {wildcards.seed} --config {input.config} {params.options} "
        "--out {output.model} --device {params.device} > {log} 2>&1"


SYNTHER_TRAIN = (
    "{params.gpu_lock} python -m adept train --method {params.method} --env {wildcards.env} "
    "--dataset {wildcards.dataset} --seed {wildcards.seed} --data {input.data} --source {params.source} "
    "--config {input.config} {params.task} --synther {input.synther} --out-dir {params.out_dir} "
    "--device {params.device} > {log} 2>&1"
)


for synther_method in SYNTHER_BASELINES:  # one rule per method, its name written literally in the output

    rule:
        name:
            f"baseline_{synther_method.replace('-', '_')}"
        input:
            data=dataset_path,
            config=layout.method_config_file(RESULTS, synther_method),
            synther=layout.synther_file(RESULTS),
        output:
            final=layout.run_file(RUNS, synther_method),
        log:
            layout.task_log(LOGS, "baselines", synther_method),
        params:
            method=synther_method,
            out_dir=lambda wildcards, output: Path(output.final).parent,
            task=lambda wildcards, method=synther_method: task_override_flags(method, wildcards.env, wildcards.dataset),
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
            SYNTHER_TRAIN
