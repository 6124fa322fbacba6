"""Adapter: rule import_released -> prism.released.import_run (an authors' checkpoint as a run's model.pt)."""
from pathlib import Path

from prism.logs import job_log
from prism.released import import_run
from prism.runs import Run

with job_log(snakemake) as log:
    w = snakemake.wildcards
    import_run(snakemake.input[0], Run.from_wildcards(w.cells, w.model, w.seed), snakemake.params.arch,
               Path(snakemake.output.model), log=log)
