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
    script:
        "../scripts/genome.py"


rule gene_table:
    input:
        unpack(gene_table_inputs),
    output:
        "results/genes/{cell}.tsv",
    params:
        spec=gene_table_params,
    log:
        "results/logs/genes/{cell}.log",
    script:
        "../scripts/gene_table.py"


rule shard:
    input:
        unpack(shard_inputs),
    output:
        "results/shards/{cell}/{chrom}.npz",
    params:
        spec=shard_params,
    log:
        "results/logs/shards/{cell}/{chrom}.log",
    benchmark:
        "results/benchmarks/shards/{cell}/{chrom}.tsv"
    script:
        "../scripts/shard.py"
