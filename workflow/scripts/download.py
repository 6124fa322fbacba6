"""Adapter: rule download -> prism.download.fetch (after resolving a file known by ENCODE experiment)."""
import os

from prism.download import AssetSpec, fetch, resolve_experiment_file, resolve_hf_files
from prism.logs import job_log
from prism.plan import expand_workdir

with job_log(snakemake) as log:
    p = expand_workdir(snakemake.params.asset, os.getcwd())  # {workdir}: here, not in the plan (relocatable)
    url, metadata_url = p["url"], p["metadata_url"]
    r = p["resolve"]
    if r and r.get("kind") == "huggingface":  # a file of a Hugging Face repository at a pinned commit
        spec = resolve_hf_files(r["repo"], r["revision"], r["folder"], r["pattern"], name=snakemake.output[0],
                                endpoint=r["endpoint"], log=log).spec()
    else:
        if r:  # a file known by ENCODE experiment
            acc = resolve_experiment_file(r["experiment_url"], r["select"], name=snakemake.output[0], log=log)
            url, metadata_url = r["download"].format(accession=acc), r["metadata"].format(accession=acc)
        spec = AssetSpec(url=url, md5=p["md5"], size=p["size"], metadata_url=metadata_url,
                         expect=p["expect"], auth_env=tuple(p["auth_env"]) if p["auth_env"] else None)
    fetch(spec, snakemake.output[0], lock=snakemake.params.lock, log=log)
