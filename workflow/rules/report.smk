# Per-run metrics -> the paper's tables and figures, each a named target (snakemake table1).


rule metrics_table:
    input:
        table_inputs,
    output:
        csv=report(
            "results/tables/{table}.csv",
            caption="../report/table.rst",
            category="Tables",
        ),
        md="results/tables/{table}.md",
    log:
        "results/logs/tables/{table}.log",
    conda:
        "../envs/report.yaml"
    params:
        entries=table_entries,
    script:
        "../scripts/metrics_table.py"


rule parameter_table:
    output:
        csv=report(
            "results/tables/table3.csv",
            caption="../report/table.rst",
            category="Tables",
        ),
        md="results/tables/table3.md",
    log:
        "results/logs/tables/table3.log",
    conda:
        "../envs/report.yaml"
    params:
        rows=PLAN.table3_rows(),
        model=config["model"],
    script:
        "../scripts/parameter_table.py"


rule figure_table2:
    input:
        "results/tables/table2.csv",
    output:
        report(
            "results/figures/figure_table2.png",
            caption="../report/figure_table2.rst",
            category="Figures",
        ),
    log:
        "results/logs/figures/figure_table2.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/figure_table2.py"


rule table1:
    input:
        "results/tables/table1.csv",
        "results/tables/table1.md",


rule table2:
    input:
        "results/tables/table2.csv",
        "results/tables/table2.md",
        "results/figures/figure_table2.png",


rule table3:
    input:
        "results/tables/table3.csv",
        "results/tables/table3.md",


rule table7:
    input:
        "results/tables/table7.csv",
        "results/tables/table7.md",


rule table13:
    input:
        "results/tables/table13.csv",
        "results/tables/table13.md",


rule table16:
    input:
        "results/tables/table16.csv",
        "results/tables/table16.md",
