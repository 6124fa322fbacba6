"""Adapter: rule download -> prism.download.fetch (after resolving a file known by ENCODE experiment)."""
import os

from prism.download import AssetSpec, fetch, resolve_experiment_file
from prism.logs import job_log
from prism.plan import expand_workdir

with job_log(snakemake) as log:
    p = expand_workdir(snakemake.params.asset, os.getcwd())  # {workdir}: here, not in the plan (relocatable)
    url, metadata_url = p["url"], p["metadata_url"]
    if p["resolve"]:
        r = p["resolve"]
        acc = resolve_experiment_file(r["experiment_url"], r["select"], name=snakemake.output[0], log=log)
        url, metadata_url = r["download"].format(accession=acc), r["metadata"].format(accession=acc)
    spec = AssetSpec(url=url, md5=p["md5"], size=p["size"], metadata_url=metadata_url,
                     expect=p["expect"], auth_env=tuple(p["auth_env"]) if p["auth_env"] else None)
    fetch(spec, snakemake.output[0], lock=snakemake.params.lock, log=log)
