# Stage 5: aggregation, from the per-run outputs only (adept.reporting). Cheap: never sent to a cluster.

localrules:
    report_spec,
    method_config,
    world_model_config,
    scores,
    table1,
    table4,
    figure3,
    profiles,
    figure_model_error,


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


rule profiles:
    """Performance profiles of the Table 1 methods (rliable score distributions with bootstrap CIs)."""
    input:
        spec=rules.report_spec.output.json,
        runs=table1_runs,
    output:
        png=report(f"{RESULTS}/profiles.png", caption="../report/profiles.rst", category="Performance profiles"),
        pdf=report(f"{RESULTS}/profiles.pdf", caption="../report/profiles.rst", category="Performance profiles"),
    log:
        f"{LOGS}/report/profiles.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/profiles.py"


rule figure_model_error:
    """The world model against the simulator (eval.csv gt/ columns) and ADEPT's ESS/N, ADEPT-X vs Diff+X."""
    input:
        spec=rules.report_spec.output.json,
        runs=model_error_runs,
    output:
        png=report(f"{RESULTS}/figure_model_error.png", caption="../report/figure_model_error.rst",
                   category="Model error"),
        pdf=report(f"{RESULTS}/figure_model_error.pdf", caption="../report/figure_model_error.rst",
                   category="Model error"),
    log:
        f"{LOGS}/report/figure_model_error.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/figure_model_error.py"
