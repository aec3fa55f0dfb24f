# Drop-in baseline (worked example of README.md in this folder): a uniform random policy.
# Listing `random` in table1.methods of the config adds its column to Table 1.

RANDOM_EPISODES = 10


rule baseline_random:
    output:
        final=f"{RUNS}/random/{{env}}-{{dataset}}/seed{{seed}}/final.json",
    log:
        f"{LOGS}/baselines/random/{{env}}-{{dataset}}/seed{{seed}}.log",
    params:
        out_dir=lambda wildcards, output: Path(output.final).parent,
        episodes=RANDOM_EPISODES,
        eval_seed=lambda wildcards: 1000 * int(wildcards.seed),  # episode i uses eval_seed + i
        to_outputs=f"{workflow.basedir}/workflow/scripts/random_baseline.py",
    conda:
        CONDA_ENV
    shell:
        "(python -m adept evaluate --random --env {wildcards.env} --episodes {params.episodes} "
        "--seed {params.eval_seed} | python {params.to_outputs} --env {wildcards.env} "
        "--dataset {wildcards.dataset} --seed {wildcards.seed} --episodes {params.episodes} "
        "--out-dir {params.out_dir}) > {log} 2>&1"
