# Reproduction workflow for "Learning from Random Demonstrations: Offline RL with Importance-Sampled
# Diffusion Models" (ADEPT): datasets -> behaviour policy pi_D -> world model -> one training run per
# (method, env, dataset, seed) -> Table 1, Figure 3, Table 4 (results/). See docs/workflow.md.
#
#   snakemake --configfile config/quick.yaml         # laptop: generated data, CPU, minutes
#   snakemake --resources gpu=4                      # the paper's grid on a machine with 4 GPUs
#   snakemake --workflow-profile profiles/slurm      # the paper's grid on SLURM
#
# profiles/default (local machine) applies unless another --workflow-profile is given. --configfile
# files are merged over config/config.yaml, the paper's grid.

from pathlib import Path

from snakemake.utils import min_version, validate

# Import the learners before any `include:`: each include puts its folder on sys.path, and
# workflow/rules/ holds the drop-in folder baselines/, which Python would otherwise take for a
# namespace package shadowing the harness's `baselines` (when that is installed in editable mode).
import baselines  # noqa: F401

min_version("9.0")


configfile: f"{workflow.basedir}/config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/behavior.smk"
include: "workflow/rules/world_model.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"


# Drop-in baselines: every .smk file in workflow/rules/baselines/ (contract in its README.md).
for baseline_rules in sorted(Path(workflow.basedir, "workflow/rules/baselines").glob("*.smk")):

    include: baseline_rules


check_baselines_have_rules()


rule all:
    input:
        report_targets(),
    default_target: True
