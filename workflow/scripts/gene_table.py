"""Adapter: rule gene_table -> prism.genes.build_gene_table."""
from prism.genes import build_gene_table, write_gene_table
from prism.logs import job_log

with job_log(snakemake) as log:
    spec, inp = snakemake.params.spec, snakemake.input
    expression = dict(spec["expression"], path=inp.expression) if spec["expression"] else None
    pa = dict(spec["promoter_activity"])
    if pa["source"] == "abc_genelist":
        pa["path"] = inp.genelist
    else:
        pa.update(h3k27ac=inp.pa_h3k27ac, dnase=inp.pa_dnase)
    df = build_gene_table(cell=snakemake.wildcards.cell, split_csv=inp.split, halflife_csv=inp.halflife,
                          fold=spec["fold"], expression=expression, promoter_activity=pa,
                          chromosomes=spec["chromosomes"])
    write_gene_table(df, snakemake.output[0])
    log(f"{len(df)} genes: " + ", ".join(f"{k} {v}" for k, v in df["split"].value_counts().items())
        + ("" if expression else "; no expression source: target left empty (predictions only)"))
