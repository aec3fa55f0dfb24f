# Drop-in baseline (contract: README.md in this folder): Diffuser (Janner et al. 2022), Table 1's column
# "Diffuser", run by the harness under the same protocol as every other column.
#
# `python -m adept train --method diffuser`: the runner's loop trains the trajectory diffusion model and its
# value function on segments of D's episodes (baselines/diffuser.py), checkpoints and evaluates like any
# run; at evaluation the policy is the guided planner. Its per-dataset settings (the Diffuser code's
# halfcheetah overrides) come from task_overrides.diffuser as --set flags.

DIFFUSER_BASELINE = "diffuser"


# Checked before any job starts: diffuser's run config on every task of the grid (e.g. a horizon the
# U-Net cannot halve).
for task_env, task_dataset in [(e, d) for e in ENVS for d in DATASETS] if DIFFUSER_BASELINE in CONFIGURED_METHODS else []:
    try:
        learner_config("diffuser", TrainConfig.from_dict(
            merge(train_config(DIFFUSER_BASELINE), task_overrides(DIFFUSER_BASELINE, task_env, task_dataset))).learner)
    except (ConfigError, ValueError) as err:
        raise ValueError(f"config of method 'diffuser' on {task_env}-{task_dataset} is invalid: {err} (set it in "
                         f"learners.diffuser, method_overrides.diffuser or "
                         f"task_overrides.diffuser.{task_env}-{task_dataset})") from None


rule baseline_diffuser:
    """Diffuser: U-Net trajectory diffusion + value guidance, planning at evaluation."""
    input:
        data=dataset_path,
        config=layout.method_config_file(RESULTS, DIFFUSER_BASELINE),
    output:
        final=layout.run_file(RUNS, "diffuser"),
    log:
        layout.task_log(LOGS, "baselines", "diffuser"),
    params:
        out_dir=lambda wildcards, output: Path(output.final).parent,
        task=lambda wildcards: task_override_flags(DIFFUSER_BASELINE, wildcards.env, wildcards.dataset),
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
        "{params.gpu_lock} python -m adept train --method diffuser --env {wildcards.env} "
        "--dataset {wildcards.dataset} --seed {wildcards.seed} --data {input.data} --source {params.source} "
        "--config {input.config} {params.task} --out-dir {params.out_dir} --device {params.device} > {log} 2>&1"
