"""Adapter: rule download -> prism.download.fetch."""
from prism.download import AssetSpec, fetch
from prism.logs import job_log

with job_log(snakemake) as log:
    p = snakemake.params.asset
    spec = AssetSpec(url=p["url"], md5=p["md5"], size=p["size"], metadata_url=p["metadata_url"],
                     expect=p["expect"], auth_env=tuple(p["auth_env"]) if p["auth_env"] else None)
    fetch(spec, snakemake.output[0], lock=snakemake.params.lock, log=log)
