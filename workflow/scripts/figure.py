"""Adapter: rule figure -> prism.figures.draw_figure."""
from prism.figures import draw_figure
from prism.logs import job_log

with job_log(snakemake) as log:
    draw_figure(snakemake.params.figure, dict(snakemake.input), snakemake.output.png, snakemake.output.svg, log=log)
