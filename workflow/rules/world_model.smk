# Stage 3: the guided diffusion world model, trained once per (env, dataset, seed) and world-model
# config. The config's hash names the folder, so ADEPT-X and Diff+X share one model and Table 4's
# K variants get their own; the folder also holds the settings file it was trained with (sections
# world_model and world_model_training, as every fit takes them).


rule world_model_config:
    output:
        yaml=f"{RESULTS}/world_models/{{tag}}/config.yaml",
    log:
        f"{LOGS}/world_models/{{tag}}/config.log",
    params:
        text=lambda wildcards: yaml.safe_dump(world_model_config_of_tag(wildcards.tag), sort_keys=False),
    conda:
        CONDA_ENV
    shell:
        WRITE_PARAMS_TEXT.format(output="{output.yaml}")


rule world_model:
    """Fit eps_theta and r_eta on D (Algorithm 1's initialization). The command keeps a resume
    checkpoint (model.ckpt) beside model.pt; Snakemake never deletes it."""
    input:
        data=dataset_path,
        config=f"{RESULTS}/world_models/{{tag}}/config.yaml",
    output:
        model=layout.world_model_file(RESULTS),
    log:
        layout.task_log(LOGS, "world_models", "{tag}"),
    params:
        options=fit_run_flags("world_model_training"),
        device=config["device"],
        gpu_lock=gpu_lock,
    threads: job_resources("world_model")["threads"]
    resources:
        gpu=job_resources("world_model")["gpu"],
        mem_mb=job_resources("world_model")["mem_mb"],
        runtime=job_resources("world_model")["runtime"],
    conda:
        CONDA_ENV
    shell:
        "{params.gpu_lock} python -m adept world-model --data {input.data} --env {wildcards.env} "
        "--dataset {wildcards.dataset} --seed {wildcards.seed} --config {input.config} {params.options} "
        "--out {output.model} --device {params.device} > {log} 2>&1"
