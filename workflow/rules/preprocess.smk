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
