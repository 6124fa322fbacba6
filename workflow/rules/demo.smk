# The embedded synthetic demo: a deterministic local mirror in the real formats and layout,
# which the download rules then fetch from like from ENCODE, 4DN and Zenodo.


rule demo_mirror:
    output:
        manifest=f"{MIRROR}/MANIFEST.json",
    log:
        "results/logs/demo_mirror.log",
    conda:
        "../envs/data.yaml"
    params:
        out=MIRROR,
        seed=config["demo"]["seed"],
        n_genes=config["demo"]["n_genes"],
    script:
        "../scripts/demo_mirror.py"
