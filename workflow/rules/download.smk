# Every download: streamed, resumable, verified by md5 and size (prism.download), then renamed into place.


rule download:
    input:
        download_inputs,
    output:
        "resources/{asset}",
    log:
        "results/logs/download/{asset}.log",
    # never rerun by Snakemake (nor a profile's retries): the downloader retries network errors
    # itself, and a checksum mismatch fails the same way every time
    retries: 0
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        asset=download_params,
        lock="resources/checksums.lock.json",
    script:
        "../scripts/download.py"
