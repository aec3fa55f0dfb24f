# Stage 1: the offline datasets. The source is a config choice (data.source) and is never swapped:
# d4rl needs the official files (downloaded when missing), generated makes them locally.

# On a cluster the download runs on the login node: compute nodes often have no internet.
localrules:
    fetch_d4rl,


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


rule collector:
    """The collector (online SAC) of the generated medium-replay data: trained until its
    stochastic policy reaches D4RL's medium return, keeping its replay buffer (medium-replay is that
    buffer up to the snapshot). CPU-bound, one env at a time: 11-50 min per env on 2 shared cores with
    the shipped settings (docs/notes/medium-datasets.md). `medium` needs only the shipped snapshot."""
    output:
        replay=f"{COLLECTOR_DIR}/{{env}}/seed{{data_seed}}/replay.hdf5",
    wildcard_constraints:
        data_seed=r"\d+",
    log:
        f"{LOGS}/datasets/collectors/{{env}}-seed{{data_seed}}.log",
    params:
        out_dir=lambda wildcards, output: Path(output.replay).parent,
        settings=collector_settings,
    threads: 1  # one env stepped at a time; more threads only spin on small networks
    resources:
        mem_mb=job_resources("dataset")["mem_mb"],
        runtime=24 * 60,
    conda:
        CONDA_ENV
    shell:
        "python -m adept collector train --env {wildcards.env} --seed {wildcards.data_seed} "
        "--threads 1 {params.settings} --out-dir {params.out_dir} > {log} 2>&1"


rule generate_dataset:
    """Generate a D4RL-recipe dataset locally (random: uniform actions; medium: the shipped
    collector snapshot's sampled actions; medium-replay: the collector's buffer)."""
    input:
        unpack(generate_dataset_inputs),
    output:
        hdf5=f"{DATA_DIR}/generated/{{env}}-{{dataset}}-seed{{data_seed}}{{size_suffix}}.hdf5",
    wildcard_constraints:
        data_seed=r"\d+",
        size_suffix=r"(-n\d+)?",
    log:
        f"{LOGS}/datasets/generated/{{env}}-{{dataset}}-seed{{data_seed}}{{size_suffix}}.log",
    params:
        size=lambda wildcards: f"--size {wildcards.size_suffix[2:]}" if wildcards.size_suffix else "",
        collector_dir=COLLECTOR_DIR,
    threads: job_resources("dataset")["threads"]
    resources:
        mem_mb=job_resources("dataset")["mem_mb"],
        runtime=job_resources("dataset")["runtime"],
    conda:
        CONDA_ENV
    shell:
        "ADEPT_COLLECTOR_DIR={params.collector_dir} python -m adept datasets generate --env {wildcards.env} "
        "--dataset {wildcards.dataset} --seed {wildcards.data_seed} {params.size} --out {output.hdf5} > {log} 2>&1"
