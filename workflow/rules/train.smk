# Stage 4: one training run per (method, env, dataset, seed) with `python -m adept train`.
#
# Only final.json is declared as output: Snakemake deletes a job's declared outputs before it runs
# it again, and the runner resumes from checkpoint.pt and the rows of eval.csv/train.csv in the run
# folder. final.json is written last, so it marks a complete run. A method's per-dataset settings
# (config `task_overrides`) come as --set flags on top of its config file.


rule method_config:
    """The run config of a method (sections run, learner, world_model, adept), from the config."""
    output:
        yaml=layout.method_config_file(RESULTS),
    log:
        f"{LOGS}/configs/{{method}}.log",
    params:
        text=lambda wildcards: yaml.safe_dump(train_config(wildcards.method), sort_keys=False),
    conda:
        CONDA_ENV
    shell:
        WRITE_PARAMS_TEXT.format(output="{output.yaml}")


rule train:
    input:
        unpack(train_inputs),
    output:
        final=layout.run_file(RUNS),
    wildcard_constraints:
        method=TRAIN_METHOD_PATTERN,
    log:
        layout.task_log(LOGS, "train", "{method}"),
    params:
        out_dir=lambda wildcards, output: Path(output.final).parent,
        models=model_flags,
        task=task_flags,
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
        "{params.gpu_lock} python -m adept train --method {wildcards.method} --env {wildcards.env} "
        "--dataset {wildcards.dataset} --seed {wildcards.seed} --data {input.data} --source {params.source} "
        "--config {input.config} {params.task} {params.models} --out-dir {params.out_dir} --device {params.device} "
        "> {log} 2>&1"
