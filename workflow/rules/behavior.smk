# Stage 2: the behaviour policy pi_D, a maximum-likelihood fit to the dataset's actions. ADEPT's
# importance weights pi(a|s) / pi_D(a|s) need it; one per (env, dataset, seed).


rule behavior_policy:
    input:
        data=dataset_path,
    output:
        policy=f"{RESULTS}/behavior/{{env}}-{{dataset}}/seed{{seed}}/policy.pt",
    log:
        f"{LOGS}/behavior/{{env}}-{{dataset}}/seed{{seed}}.log",
    params:
        options=behavior_policy_options(),
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
        "--seed {wildcards.seed} --out {output.policy} {params.options} --device {params.device} > {log} 2>&1"
