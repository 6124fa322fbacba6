# One training run per (cell lines, architecture and settings, seed), and one evaluation per run of
# every (cell line, test-time variant) the tables ask of it. The run's identity is its path
# (prism.runs); any table that needs the same model shares it. Released checkpoints are imported
# instead of trained (rule import_released) and evaluated by the same rule.


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
    wildcard_constraints:
        model=PLAN.model_pattern(released=False),
    conda:
        "../envs/train.yaml"
    resources:
        gpu=1,
    params:
        run=train_params,
    script:
        "../scripts/train.py"


rule evaluate:
    input:
        unpack(eval_inputs),
    output:
        metrics="results/runs/{cells}/{model}/seed{seed}/evaluation.json",
        predictions="results/runs/{cells}/{model}/seed{seed}/evaluation.predictions.tsv",
    log:
        "results/logs/evaluate/{cells}/{model}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{cells}/{model}/seed{seed}.tsv"
    conda:
        "../envs/train.yaml"
    resources:
        gpu=1,
    params:
        evaluation=eval_params,
    script:
        "../scripts/evaluate.py"


rule confounder_weights:
    input:
        unpack(weights_inputs),
    output:
        "results/runs/{cells}/{model}/seed{seed}/weights/{cell}.npz",
    log:
        "results/logs/weights/{cells}/{model}/seed{seed}/{cell}.log",
    conda:
        "../envs/train.yaml"
    params:
        inputs=weights_params,
    script:
        "../scripts/confounder_weights.py"


rule predict:
    input:
        unpack(predict_inputs),
    output:
        tsv="results/predictions/{cell}/{cells}__{model}__seed{seed}.tsv",
        bed="results/predictions/{cell}/{cells}__{model}__seed{seed}.bed",
    log:
        "results/logs/predict/{cell}/{cells}__{model}__seed{seed}.log",
    conda:
        "../envs/train.yaml"
    params:
        inputs=predict_params,
    script:
        "../scripts/predict.py"


rule import_released:
    input:
        released_checkpoint,
    output:
        model="results/runs/{cells}/{model}/seed{seed}/model.pt",
    log:
        "results/logs/import_released/{cells}/{model}/seed{seed}.log",
    wildcard_constraints:
        model=PLAN.model_pattern(released=True),
    conda:
        "../envs/train.yaml"
    params:
        arch=import_params,
    script:
        "../scripts/import_released.py"
