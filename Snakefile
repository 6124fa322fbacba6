# Prism: reproduce every table and figure of the paper from public data (README.md).
#   snakemake --profile profiles/slurm              the paper's configuration on a SLURM cluster
#   snakemake table2                                one table and only what it needs


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"


localrules:
    all,
    download,
    table1,
    table2,
    table3,
    table7,
    table13,
    table16,


rule all:
    input:
        all_targets(),


include: "workflow/rules/download.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


if DEMO:

    include: "workflow/rules/demo.smk"
