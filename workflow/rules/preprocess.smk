# Assets -> per-gene table -> per-(cell line, chromosome) .npz shards (prism.genes, prism.preprocess).


rule genome:
    input:
        PLAN.asset("genome"),
    output:
        fasta="results/genome/hg38.ml.fa",
        fai="results/genome/hg38.ml.fa.fai",
    log:
        "results/logs/genome.log",
    benchmark:
        "results/benchmarks/genome.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/genome.py"


rule gene_table:
    input:
        unpack(gene_table_inputs),
    output:
        "results/genes/{cell}.tsv",
    log:
        "results/logs/genes/{cell}.log",
    conda:
        "../envs/data.yaml"
    params:
        spec=gene_table_params,
    script:
        "../scripts/gene_table.py"


rule shard:
    input:
        unpack(shard_inputs),
    output:
        "results/shards/{cell}/{chrom}.npz",
    log:
        "results/logs/shards/{cell}/{chrom}.log",
    benchmark:
        "results/benchmarks/shards/{cell}/{chrom}.tsv"
    conda:
        "../envs/data.yaml"
    params:
        spec=shard_params,
    script:
        "../scripts/shard.py"


rule statistics:
    input:
        unpack(statistics_inputs),
    output:
        "results/statistics/{cell}.json",
    log:
        "results/logs/statistics/{cell}.log",
    conda:
        "../envs/data.yaml"
    params:
        spec=statistics_params,
    script:
        "../scripts/statistics.py"


rule store_genome:
    input:
        fasta="results/genome/hg38.ml.fa",
        fai="results/genome/hg38.ml.fa.fai",
    output:
        "results/store/genome/{chrom}.npy",
    log:
        "results/logs/store/genome/{chrom}.log",
    benchmark:
        "results/benchmarks/store/genome/{chrom}.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/store_genome.py"


rule store_tracks:
    input:
        unpack(store_track_inputs),
    output:
        tracks="results/store/{cell}/{chrom}.tracks.npy",
        meta="results/store/{cell}/{chrom}.tracks.json",
    log:
        "results/logs/store/{cell}/{chrom}.tracks.log",
    benchmark:
        "results/benchmarks/store/{cell}/{chrom}.tracks.tsv"
    conda:
        "../envs/data.yaml"
    params:
        tracks=store_track_params,
    script:
        "../scripts/store_tracks.py"


rule store_hic:
    input:
        unpack(store_hic_inputs),
    output:
        "results/store/{cell}/{chrom}.hic.npz",
    log:
        "results/logs/store/{cell}/{chrom}.hic.log",
    benchmark:
        "results/benchmarks/store/{cell}/{chrom}.hic.tsv"
    conda:
        "../envs/data.yaml"
    params:
        spec=store_hic_params,
    script:
        "../scripts/store_hic.py"


rule gather:
    input:
        gathered_inputs,
    output:
        "results/{folder}/inputs.json",
    log:
        "results/logs/gather/{folder}.log",
    localrule: True
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/gather.py"


rule peaks:
    input:
        unpack(peaks_inputs),
    output:
        "results/peaks/{cell}/dnase.macs3.narrowPeak",
    log:
        "results/logs/peaks/{cell}.log",
    benchmark:
        "results/benchmarks/peaks/{cell}.tsv"
    conda:
        "../envs/data.yaml"
    params:
        chromosomes=PLAN.chromosomes,
    script:
        "../scripts/peaks.py"


rule candidates:
    input:
        unpack(candidates_inputs),
    output:
        "results/candidates/{cell}.tsv",
    log:
        "results/logs/candidates/{cell}.log",
    conda:
        "../envs/data.yaml"
    params:
        spec=candidates_params,
    script:
        "../scripts/candidates.py"
