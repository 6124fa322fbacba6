# Every download: streamed, resumable, verified by md5 and size (prism.download), then renamed into place.


rule download:
    localrule: True
    input:
        download_inputs,
    output:
        "resources/{asset}",
    log:
        "results/logs/download/{asset}.log",
    retries: 2
    conda:
        "../envs/data.yaml"
    params:
        asset=download_params,
        lock="resources/checksums.lock.json",
    script:
        "../scripts/download.py"
