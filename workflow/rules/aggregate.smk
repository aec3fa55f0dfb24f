# Stage 5: aggregation, from the per-run outputs only (adept.reporting). Cheap: never sent to a cluster.

localrules:
    report_spec,
    method_config,
    world_model_config,
    scores,
    table1,
    table4,
    figure3,


rule report_spec:
    """What to aggregate (grid, columns, labels); `python -m adept.reporting` rebuilds everything from it."""
    output:
        json=f"{RESULTS}/report_spec.json",
    log:
        f"{LOGS}/report/report_spec.log",
    params:
        text=json.dumps(report_spec(), indent=2) + "\n",
    conda:
        CONDA_ENV
    shell:
        WRITE_PARAMS_TEXT.format(output="{output.json}")


rule scores:
    input:
        spec=rules.report_spec.output.json,
        runs=all_runs,
    output:
        csv=report(f"{RESULTS}/scores.csv", caption="../report/scores.rst", category="Runs"),
    log:
        f"{LOGS}/report/scores.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/scores.py"


rule table1:
    input:
        spec=rules.report_spec.output.json,
        runs=table1_runs,
    output:
        md=report(f"{RESULTS}/table1.md", caption="../report/table1.rst", category="Table 1"),
        tex=report(f"{RESULTS}/table1.tex", caption="../report/table1.rst", category="Table 1"),
        html=report(f"{RESULTS}/table1.html", caption="../report/table1.rst", category="Table 1"),
    log:
        f"{LOGS}/report/table1.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/table1.py"


rule table4:
    input:
        spec=rules.report_spec.output.json,
        runs=table4_runs,
    output:
        md=report(f"{RESULTS}/table4.md", caption="../report/table4.rst", category="Table 4"),
        tex=report(f"{RESULTS}/table4.tex", caption="../report/table4.rst", category="Table 4"),
        html=report(f"{RESULTS}/table4.html", caption="../report/table4.rst", category="Table 4"),
    log:
        f"{LOGS}/report/table4.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/table4.py"


rule figure3:
    input:
        spec=rules.report_spec.output.json,
        runs=figure3_runs,
    output:
        png=report(f"{RESULTS}/figure3.png", caption="../report/figure3.rst", category="Figure 3"),
        pdf=report(f"{RESULTS}/figure3.pdf", caption="../report/figure3.rst", category="Figure 3"),
    log:
        f"{LOGS}/report/figure3.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/figure3.py"
