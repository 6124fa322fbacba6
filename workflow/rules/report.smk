# Per-run metrics and data -> the paper's tables and figures. Every table and figure of the config is a
# named target (snakemake table5, snakemake figure1), derived from the one registry prism.plan.Plan.targets.


rule metrics_table:
    input:
        table_inputs,
    output:
        csv="results/tables/{table}.csv",
        md="results/tables/{table}.md",
        html=report(
            "results/tables/{table}.html",
            caption="../report/target.rst",
            category=target_section,
            labels=target_labels,
        ),
    log:
        "results/logs/tables/{table}.log",
    wildcard_constraints:
        table=wildcard_pattern(PLAN.tables_of_kind("metrics")) or "no-table",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        table=table_params,
        caption=target_caption,
    script:
        "../scripts/metrics_table.py"


rule parameter_table:
    output:
        csv="results/tables/{table}.csv",
        md="results/tables/{table}.md",
        html=report(
            "results/tables/{table}.html",
            caption="../report/target.rst",
            category=target_section,
            labels=target_labels,
        ),
    log:
        "results/logs/tables/{table}.log",
    wildcard_constraints:
        table=wildcard_pattern(PLAN.tables_of_kind("parameters")) or "no-table",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        table=table_params,
        caption=target_caption,
    script:
        "../scripts/parameter_table.py"


rule hyperparameter_table:
    output:
        csv="results/tables/{table}.csv",
        md="results/tables/{table}.md",
        html=report(
            "results/tables/{table}.html",
            caption="../report/target.rst",
            category=target_section,
            labels=target_labels,
        ),
    log:
        "results/logs/tables/{table}.log",
    wildcard_constraints:
        table=wildcard_pattern(PLAN.tables_of_kind("hyperparameters")) or "no-table",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        table=table_params,
        caption=target_caption,
    script:
        "../scripts/hyperparameter_table.py"


rule data_statistics_table:
    input:
        unpack(statistics_table_inputs),
    output:
        csv="results/tables/{table}.csv",
        md="results/tables/{table}.md",
        html=report(
            "results/tables/{table}.html",
            caption="../report/target.rst",
            category=target_section,
            labels=target_labels,
        ),
    log:
        "results/logs/tables/{table}.log",
    wildcard_constraints:
        table=wildcard_pattern(PLAN.tables_of_kind("data_statistics")) or "no-table",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        table=table_params,
        caption=target_caption,
    script:
        "../scripts/data_statistics_table.py"


rule figure:
    input:
        unpack(figure_inputs),
    output:
        png=report(
            "results/figures/{figure}.png",
            caption="../report/target.rst",
            category=target_section,
            labels=target_labels,
        ),
        svg="results/figures/{figure}.svg",
    log:
        "results/logs/figures/{figure}.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        figure=figure_params,
        caption=target_caption,
    script:
        "../scripts/figure.py"


for target in TARGETS:

    rule:
        name:
            target.name
        input:
            target.outputs,
        localrule: True


rule paper:
    input:
        all_targets(),
    localrule: True
