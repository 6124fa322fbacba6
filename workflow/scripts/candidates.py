"""Adapter: rule candidates -> prism.candidates (EPInformer's elements: from ABC predictions, else MACS3 peaks)."""
from prism.candidates import build_candidates_from_abc, build_candidates_from_peaks
from prism.logs import job_log

with job_log(snakemake) as log:
    inp, p = snakemake.input, snakemake.params.spec
    if "abc" in inp.keys():
        out = build_candidates_from_abc(inp.abc[0], inp.genes[0], snakemake.output[0], member=p["member"])
        how = "ABC predictions"
    else:
        out = build_candidates_from_peaks(inp.peaks[0], inp.genes[0], snakemake.output[0], h3k27ac=inp.h3k27ac[0],
                                          dnase=inp.dnase[0], hic={"path": inp.hic[0], **p["hic"]})
        how = "MACS3 peaks"
    c = out["candidates"]
    log(f"{out['n_genes']} genes from {how}: candidates per gene median {c['median']:g}, min {c['min']}, max {c['max']}")
