# Drop-in baseline (worked example of README.md in this folder): a uniform random policy.
# Listing `random` in table1.methods of the config adds its column to Table 1.

RANDOM_EPISODES = 10


rule baseline_random:
    output:
        final=layout.run_file(RUNS, "random"),
    log:
        layout.task_log(LOGS, "baselines", "random"),
    params:
        out_dir=lambda wildcards, output: Path(output.final).parent,
        episodes=RANDOM_EPISODES,
        eval_seed=lambda wildcards: 1000 * int(wildcards.seed),  # episode i uses eval_seed + i
        script=f"{workflow.basedir}/workflow/scripts/random_baseline.py",
    conda:
        CONDA_ENV
    shell:
        "python {params.script} --env {wildcards.env} --dataset {wildcards.dataset} --seed {wildcards.seed} "
        "--episodes {params.episodes} --eval-seed {params.eval_seed} --out-dir {params.out_dir} > {log} 2>&1"
