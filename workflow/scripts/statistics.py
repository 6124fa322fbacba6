"""Adapter: rule statistics -> prism.statistics.cell_statistics (Table 8; no training)."""
from prism.logs import job_log
from prism.statistics import cell_statistics

with job_log(snakemake) as log:
    p, inp = snakemake.params.spec, snakemake.input
    abc = p["abc"]
    cell_statistics(inp.genes[0], inp.hic[0], inp.fai[0], snakemake.output[0], normalization=p["hic_normalization"],
                    resolution=p["hic_resolution"], abc=inp.abc[0] if abc else None,
                    abc_member=abc.get("member") if abc else None, log=log)
