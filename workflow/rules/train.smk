# One training run per (cell lines, model settings, seed), and its test-set evaluations.
# The run's identity is its path (prism.runs); any table that needs the same model shares it.


rule train:
    input:
        unpack(train_inputs),
    output:
        model="results/runs/{cells}/{model}/seed{seed}/model.pt",
        history="results/runs/{cells}/{model}/seed{seed}/history.csv",
    log:
        "results/logs/train/{cells}/{model}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{cells}/{model}/seed{seed}.tsv"
    conda:
        "../envs/train.yaml"
    resources:
        gpu=1,
    params:
        model=config["model"],
        training=config["training"],
    script:
        "../scripts/train.py"


rule evaluate:
    input:
        unpack(eval_inputs),
    output:
        metrics="results/runs/{cells}/{model}/seed{seed}/eval/{cell}/{variant}.json",
        predictions="results/runs/{cells}/{model}/seed{seed}/eval/{cell}/{variant}.predictions.tsv",
    log:
        "results/logs/evaluate/{cells}/{model}/seed{seed}/{cell}/{variant}.log",
    benchmark:
        "results/benchmarks/evaluate/{cells}/{model}/seed{seed}/{cell}/{variant}.tsv"
    conda:
        "../envs/train.yaml"
    resources:
        gpu=1,
    script:
        "../scripts/evaluate.py"
