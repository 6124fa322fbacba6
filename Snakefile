# Prism: reproduce every table and figure of the paper from public data (README.md).
#   snakemake --profile profiles/slurm              the paper's configuration on a SLURM cluster
#   snakemake table2                                one table and only what it needs
#   snakemake paper                                 every table and figure the config declares


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        all_targets(),
    localrule: True


include: "workflow/rules/download.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


if DEMO:

    include: "workflow/rules/demo.smk"
