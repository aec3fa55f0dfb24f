# Stage 2: the behaviour policy pi_D, a maximum-likelihood fit to the dataset's actions. ADEPT's
# importance weights pi(a|s) / pi_D(a|s) need it; one per (env, dataset, seed).


localrules:
    behavior_policy_config,


rule behavior_policy_config:
    """The settings file of the fits (section behavior_policy); a change refits every pi_D."""
    output:
        yaml=f"{RESULTS}/behavior/config.yaml",
    log:
        f"{LOGS}/behavior/config.log",
    params:
        text=yaml.safe_dump(fit_settings("behavior_policy"), sort_keys=False),
    conda:
        CONDA_ENV
    shell:
        WRITE_PARAMS_TEXT.format(output="{output.yaml}")


rule behavior_policy:
    input:
        data=dataset_path,
        config=rules.behavior_policy_config.output.yaml,
    output:
        policy=layout.behavior_policy_file(RESULTS),
    log:
        layout.task_log(LOGS, "behavior"),
    params:
        device=config["device"],
        gpu_lock=gpu_lock,
    threads: job_resources("behavior_policy")["threads"]
    resources:
        gpu=job_resources("behavior_policy")["gpu"],
        mem_mb=job_resources("behavior_policy")["mem_mb"],
        runtime=job_resources("behavior_policy")["runtime"],
    conda:
        CONDA_ENV
    shell:
        "{params.gpu_lock} python -m adept behavior-policy --data {input.data} --env {wildcards.env} "
        "--seed {wildcards.seed} --config {input.config} --out {output.policy} --device {params.device} > {log} 2>&1"
