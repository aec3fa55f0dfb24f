# Stage 1: the offline datasets. The source is a config choice (data.source) and is never swapped:
# d4rl needs the official files (downloaded when missing), generated makes them locally.


rule fetch_d4rl:
    """Locate (or download) an official D4RL v2 file and validate it."""
    output:
        hdf5=f"{DATA_DIR}/d4rl/{{env}}_{{dataset_file}}-v2.hdf5",
    log:
        f"{LOGS}/datasets/d4rl/{{env}}_{{dataset_file}}.log",
    params:
        dataset=lambda wildcards: wildcards.dataset_file.replace("_", "-"),
        folder=lambda wildcards, output: Path(output.hdf5).parent,
    threads: job_resources("dataset")["threads"]
    resources:
        mem_mb=job_resources("dataset")["mem_mb"],
        runtime=job_resources("dataset")["runtime"],
    conda:
        CONDA_ENV
    shell:
        "python -m adept datasets fetch --env {wildcards.env} --dataset {params.dataset} "
        "--dir {params.folder} > {log} 2>&1"


rule generate_dataset:
    """Generate a D4RL-recipe dataset locally (random: uniform actions; medium/medium-replay: an
    online SAC behaviour agent, trained by the command itself)."""
    output:
        hdf5=f"{DATA_DIR}/generated/{{env}}-{{dataset}}-seed{{data_seed}}{{size_suffix}}.hdf5",
    wildcard_constraints:
        data_seed=r"\d+",
        size_suffix=r"(-n\d+)?",
    log:
        f"{LOGS}/datasets/generated/{{env}}-{{dataset}}-seed{{data_seed}}{{size_suffix}}.log",
    params:
        size=lambda wildcards: f"--size {wildcards.size_suffix[2:]}" if wildcards.size_suffix else "",
    threads: job_resources("dataset")["threads"]
    resources:
        mem_mb=job_resources("dataset")["mem_mb"],
        runtime=job_resources("dataset")["runtime"],
    conda:
        CONDA_ENV
    shell:
        "python -m adept datasets generate --env {wildcards.env} --dataset {wildcards.dataset} "
        "--seed {wildcards.data_seed} {params.size} --out {output.hdf5} > {log} 2>&1"
