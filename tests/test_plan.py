"""Run identity and the workflow plan, from the real config files (no Snakemake, no torch)."""

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from prism.plan import ConfigError, Plan
from prism.runs import ModelSpec, Run, RunError

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    cfg = yaml.safe_load((ROOT / "config" / name).read_text())
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    jsonschema.validate(cfg, schema)
    return cfg


@pytest.fixture(scope="module")
def paper():
    return load("config.yaml")


@pytest.fixture(scope="module")
def paper_plan(paper):
    return Plan(paper, workdir="/w")


def test_model_id_round_trips_and_is_canonical():
    prism = ModelSpec()
    assert prism.model_id == "L2000_h3k27ac+dnase+hic_K2_l1-1_l2-1"  # Prism's run paths are those of before
    assert ModelSpec.parse(prism.model_id) == prism.canonical()
    for spec in [ModelSpec(K=0), ModelSpec(lambda1=0.0), ModelSpec(K=0, lambda2=10.0)]:
        assert spec.model_id == "L2000_h3k27ac+dnase+hic_K0"
    odd = ModelSpec(length=100, signals=("dnase",), K=6, lambda1=0.1, lambda2=10.0, retention=0.7)
    assert odd.model_id == "L100_dnase_K6_l1-0.1_l2-10_ret0.7"
    assert ModelSpec.parse(odd.model_id) == odd.canonical()
    assert ModelSpec.parse("L500_nosig_K0") == ModelSpec(length=500, signals=(), K=0).canonical()
    # another architecture: its name prefixes the id; without a confounder encoder there is no K at all
    s2e = ModelSpec.from_settings({"arch": "seq2exp-soft", "length": 200000, "K": 2}, confounder=False)
    assert s2e.model_id == "seq2exp-soft_L200000_h3k27ac+dnase+hic" and s2e.K is None
    assert ModelSpec.parse(s2e.model_id) == s2e
    enf = ModelSpec.from_settings({"arch": "enformer", "signals": ["dnase"]}, confounder=False, takes_signals=False)
    assert enf.model_id == "enformer_L2000_nosig"
    cad = ModelSpec(arch="caduceus", length=200000, signals=(), K=0)
    assert cad.model_id == "caduceus_L200000_nosig_K0" and ModelSpec.parse(cad.model_id) == cad.canonical()


def test_bad_run_settings_are_named():
    with pytest.raises(RunError, match="not canonical"):
        ModelSpec.parse("L2000_h3k27ac+dnase+hic_K0_l1-1_l2-1")
    with pytest.raises(RunError, match="not canonical"):
        ModelSpec.parse("prism_L2000_h3k27ac+dnase+hic_K0")
    with pytest.raises(RunError, match="retention"):
        ModelSpec(retention=0.0)
    with pytest.raises(RunError, match="unknown model setting"):
        ModelSpec.from_settings({"lamda1": 1})
    with pytest.raises(RunError, match="cell line name"):
        Run(("K5+62",), ModelSpec(), 2)
    with pytest.raises(RunError, match="K must be"):
        ModelSpec(K=2.0)
    with pytest.raises(RunError, match="arch must be"):
        ModelSpec(arch="Seq2Exp")


def test_run_path_round_trip():
    run = Run(("K562", "GM12878"), ModelSpec(K=4), 22)
    assert run.path == "results/runs/K562+GM12878/L2000_h3k27ac+dnase+hic_K4_l1-1_l2-1/seed22"
    assert Run.from_path(run.path + "/model.pt") == Run(run.cells, run.model.canonical(), 22)


def test_paper_plan_shares_runs_between_tables(paper_plan):
    plan = paper_plan

    def runs(table, label, cell="K562", group=None):
        return {e.run.path for e in plan.evaluations[table]
                if e.row.label == label and e.cell == cell and group in (None, e.row.group)}

    prism = runs("table1", "Prism")
    assert len(prism) == 5 and {Run.from_path(p).seed for p in prism} == {2, 22, 222, 2222, 22222}
    # one trained model serves every table that needs it
    assert prism == runs("table2", "2") == runs("table12", "Prism (3 signals)") == runs("table14", "2000", group="Prism (λ1 = 1)") \
        == runs("table13", "Prism (cell-specific)") == runs("table16", "Prism w/ learned weights")
    cad2k = runs("table1", "Caduceus w/ signals (2 kb)")
    assert cad2k == runs("table2", "0") == runs("table6", "All signals") == runs("table7", "Drop dnase")
    assert cad2k == runs("table5", "2000", group="Caduceus w/ signals") == runs("table14", "2000", group="Caduceus w/ signals") and not cad2k & runs("table1", "Caduceus w/ signals")
    assert runs("table6", "+H3K27ac") == runs("table11", "H3K27ac")
    t1 = {e.run.path for e in plan.evaluations["table1"]}
    assert {Run.from_path(p).cells for p in t1} == {("K562",), ("GM12878",), ("H1",)}
    mixed = {e.run.cells for e in plan.evaluations["table13"] if e.row.label == "Prism (mixed-training)"}
    assert mixed == {("K562", "GM12878")}
    # the evaluation job of a run computes every (cell, variant) any table asks of it
    assert plan.tests[sorted(cad2k)[0]] == [("K562", v) for v in ("drop-dnase", "drop-h3k27ac", "drop-hic", "full")]


def test_table4_is_the_papers_released_checkpoints_beside_our_own_seq2exp(paper_plan):
    plan = paper_plan
    rows = plan.table_rows("table4")
    released, trained = "Seq2Exp-soft (released checkpoints)", "Seq2Exp-soft (trained here)"
    assert list(dict.fromkeys(r.group for r in rows)) == [released, trained]
    lengths = [2000, 2010, 2020, 2030, 2040, 2050, 2070, 2100, 2500, 3000, 8000, 10000, 200000]
    for group in (released, trained):
        assert [r.variant for r in rows if r.group == group] == [f"length-{n}" for n in lengths]
    runs = {g: {e.run for e in plan.evaluations["table4"] if e.row.group == g} for g in (released, trained)}
    assert {r.model.model_id for r in runs[released]} == {"seq2exp-released_L200000_h3k27ac+dnase+hic"}
    assert {r.model.model_id for r in runs[trained]} == {"seq2exp-soft_L200000_h3k27ac+dnase+hic"}
    assert {r.seed for r in runs[released]} == {r.seed for r in runs[trained]} == {2, 22, 222, 2222, 22222}
    # the released runs are imported from Seq2Exp's checkpoints (one per seed), the others trained
    pattern = re.compile(plan.model_pattern(released=True))
    assert all(pattern.fullmatch(r.model.model_id) for r in runs[released])
    assert not any(pattern.fullmatch(r.model.model_id) for r in runs[trained])
    for run in sorted(runs[released], key=lambda r: r.seed):
        path = plan.released_checkpoint(run)
        assert path == f"resources/weights/seq2exp-authors/K562/seed{run.seed}.ckpt"
        assert plan.assets[path].resolve == {
            "kind": "huggingface", "repo": "xingyusu/GeneExp_Seq2Exp", "revision": "UNPINNED",
            "endpoint": "https://huggingface.co", "folder": f"Seq2Exp-soft/K562/seed_{run.seed}", "pattern": "*.ckpt"}
        # one evaluation job per run tests every shortened input
        assert plan.tests[run.path] == sorted(("K562", f"length-{n}") for n in lengths)
    assert plan.architectures["seq2exp-released"]["model"] == plan.architectures["seq2exp-soft"]["model"]


def test_sweeps_are_in_numeric_order_and_rows_carry_their_value():
    cfg = load("demo.yaml")
    cfg["experiments"]["table2"]["sweeps"]["lambda1"] = [10.0, 0.1, 1.0]
    plan = Plan(cfg, workdir="/w")
    rows = [r for r in plan.table_rows("table2") if r.group == "lambda1"]
    assert [r.label for r in rows] == ["0.1", "1", "10"] and [r.x for r in rows] == [0.1, 1.0, 10.0]
    assert all(r.setting == "lambda1" for r in rows)


def test_paper_assets(paper_plan):
    plan = paper_plan
    a = plan.assets["resources/encode/ENCFF465GBD.bigWig"]
    assert a.url == "https://www.encodeproject.org/files/ENCFF465GBD/@@download/ENCFF465GBD.bigWig"
    assert a.metadata_url == "https://www.encodeproject.org/files/ENCFF465GBD/?format=json&frame=object"
    assert a.expect == {"assembly": "GRCh38", "file_format": "bigWig"}
    # ChIA-PET is a bigWig by the paper's word: ENCODE's metadata must say so, or the download refuses it
    assert plan.assets["resources/encode/ENCFF278RFG.bigWig"].expect["file_format"] == "bigWig"
    h = plan.assets["resources/4dn/4DNFITUOMFUQ.hic"]
    assert h.url == "https://data.4dnucleome.org/files-processed/4DNFITUOMFUQ/@@download/4DNFITUOMFUQ.hic"
    assert h.auth_env == ("FOURDN_ACCESS_KEY", "FOURDN_SECRET_KEY")
    assert plan.signal("K562", "hic") == ("resources/4dn/4DNFITUOMFUQ.hic", "hic")
    assert set(plan.bigwig_tracks("K562")) == {"h3k27ac", "dnase", "h3k4me3", "chiapet"}
    assert plan.gene_table_inputs("H1")["pa_dnase"] == "resources/encode/ENCFF232GUZ.bigWig"
    fp = plan.assets["resources/encode/ENCSR000EOT.footprints.bigBed"]
    assert fp.resolve["experiment_url"] == "https://www.encodeproject.org/experiments/ENCSR000EOT/?format=json"
    assert fp.resolve["select"] == {"file_format": "bigBed", "assembly": "GRCh38", "output_type": "footprints"}
    assert fp.resolve["download"].format(accession="ENCFF1") == \
        "https://www.encodeproject.org/files/ENCFF1/@@download/ENCFF1.bigBed"
    assert plan.signal("K562", "footprints") == ("resources/encode/ENCSR000EOT.footprints.bigBed", "bigbed")


def test_demo_plan_uses_the_mirror_and_stays_relocatable():
    plan = Plan(load("demo.yaml"), workdir="/tmp/x")
    # {workdir} is filled at download time, never in the plan: a moved demo folder plans nothing new
    assert plan.assets["resources/assets/genome/hg38.ml.fa.gz"].url == "file://{workdir}/mirror/genome/hg38.ml.fa.gz"
    assert all("/tmp/x" not in str(a.as_params()) for a in plan.assets.values())
    assert {r.cells[0] for r in plan.runs("table1")} == {"synthA", "synthB"}  # synthC plays H1: Table 15
    assert "synthD" not in {e.cell for evs in plan.evaluations.values() for e in evs}  # no expression
    assert any("synthD" in n for n in plan.notes)
    assert {c for c, _ in plan.predictions} == {"synthD", "synthA"}


def test_long_inputs_come_from_the_store(paper_plan):
    run = next(e.run for e in paper_plan.evaluations["table1"] if e.row.label == "Caduceus w/ signals")
    files = paper_plan.data_inputs("K562", run.model)  # what the job reads
    assert "shards" not in files and len(files["store"]) == 3 * 23 and len(files["genome"]) == 23
    # what the job depends on: one gathered list per folder, so the DAG stays small
    assert paper_plan.run_inputs(run) == {"genes": ["results/genes/K562.tsv"],
                                          "genome": ["results/store/genome/inputs.json"],
                                          "store": ["results/store/K562/inputs.json"]}
    assert paper_plan.gathered("store/K562") == files["store"]
    short = next(e.run for e in paper_plan.evaluations["table1"] if e.row.label == "Prism")
    assert set(paper_plan.run_inputs(short)) == {"genes", "shards"}


def test_targets_are_one_registry(paper_plan):
    targets = {t.name: t for t in paper_plan.targets()}
    assert {"table1", "table2", "table3", "table8", "table9", "figure1", "figure6"} <= set(targets)
    t1 = targets["table1"]
    assert t1.outputs == ("results/tables/table1.csv", "results/tables/table1.md", "results/tables/table1.html")
    assert t1.section == "1 Main results" and t1.title.startswith("Table 1")
    assert "K562, GM12878, H1" in t1.caption and "5 seed" in t1.caption and "Table 1" in t1.caption
    assert targets["figure1"].outputs == ("results/figures/figure1.png", "results/figures/figure1.svg")
    assert targets["table3"].kind == "parameters" and "nothing is trained" in targets["table3"].caption


def test_a_table_declared_only_in_config_is_planned():
    cfg = load("demo.yaml")
    cfg["experiments"]["my_table"] = {
        "title": "Prism with H3K4me3 on synthA", "section": "Mine", "cells": ["synthA"], "seeds": [2, 22],
        "groups": {"with H3K4me3": {"model": {"signals": ["h3k27ac", "dnase", "hic", "h3k4me3"]},
                                    "sweep": {"K": [2, 0]}}}}
    plan = Plan(cfg, workdir="/w")
    rows = plan.table_rows("my_table")
    assert [(r.group, r.label) for r in rows] == [("with H3K4me3", "0"), ("with H3K4me3", "2")]
    assert len(plan.evaluations["my_table"]) == 4
    t = plan.target("my_table")
    assert t.title == "Prism with H3K4me3 on synthA" and t.section == "Mine" and "not in the paper" in t.caption


def test_a_row_may_be_tested_on_some_of_the_tables_cells():
    plan = Plan(load("demo.yaml"), workdir="/w")
    by_row = {}
    for e in plan.evaluations["table1"]:
        by_row.setdefault(e.row.label, set()).add(e.cell)
    assert by_row["Enformer"] == {"synthA"} and by_row["Prism"] == {"synthA", "synthB"}
    assert not any(r.model.arch == "enformer" and r.cells == ("synthB",) for r in plan.runs())


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["experiments"]["table1"]["rows"]["Prism"].update(cells=["H1", "K999"]),
     "experiments.table1: row 'Prism': cells names 'K999', which is not among the table's cells"),
    (lambda c: c["experiments"]["table2"].update(cells=["K999"]), "experiments.table2.cells names 'K999'"),
    (lambda c: c["cell_lines"]["K562"]["expression"].update(asset="nope"),
     "cell_lines.K562.expression.asset names 'nope'"),
    (lambda c: c["experiments"]["table7"]["rows"].update({"Drop k4": {"variant": "drop-h3k4me3"}}),
     "experiments.table7.rows.Drop k4: variant 'drop-h3k4me3' drops 'h3k4me3'"),
    (lambda c: c["run_defaults"].update(signals=["h3k27ac", "dnase", "hic", "atac"]),
     "run_defaults.signals names 'atac'"),
    (lambda c: c.pop("sources"), "sources.encode is not configured"),
    (lambda c: c.update(seeds=[2, 2]), "seeds lists seed 2 twice"),
    (lambda c: c["experiments"]["table2"].update(seeds=[2, 22, 2]), "experiments.table2.seeds lists seed 2 twice"),
    (lambda c: c["cell_lines"]["K562"]["expression"].pop("column"),
     "cell_lines.K562.expression: source csv_column needs 'column'"),
    (lambda c: c["cell_lines"]["K562"]["promoter_activity"].pop("asset"),
     "cell_lines.K562.promoter_activity: source abc_genelist needs 'asset'"),
    (lambda c: c["cell_lines"]["H1"]["signals"].pop("dnase"),
     "cell_lines.H1.promoter_activity: source bigwig needs a 'dnase' bigWig signal"),
    (lambda c: c["cell_lines"]["K562"]["signals"].update(hic2={"4dn": "4DNFIXXXXXX"}),
     "cell_lines.K562.signals has 2 Hi-C signals"),
    (lambda c: c["run_defaults"].update(K=2.0), "run_defaults: K must be a non-negative integer, got 2.0"),
    (lambda c: c["run_defaults"].update(signals=["H3K27ac"]), "run_defaults: signal name 'H3K27ac'"),
    (lambda c: c["cell_lines"]["K562"]["signals"].pop("hic"), "run_defaults.signals names 'hic', which cell line K562"),
    (lambda c: c.update(chromosomes=["chr1", "chr1"]), "chromosomes lists chr1 twice"),
    (lambda c: c["experiments"]["table1"]["rows"].update(X={"arch": "nope"}),
     "experiments.table1.rows.X.arch names 'nope', which is not under architectures"),
    (lambda c: c["experiments"]["table2"]["sweeps"].update(K=[1, 1]), "experiments.table2.sweeps.K lists a value twice"),
    (lambda c: c["figures"]["figure1"]["panels"][0].update(table="table99"), "figures.figure1.panels[0].table"),
    (lambda c: c["architectures"]["enformer"].update(released="prism-authors"),
     "architectures.enformer.released: kind enformer has no importer of released checkpoints (prism.archs: prism, "
     "seq2exp)"),
    (lambda c: c["experiments"]["table4"]["groups"]["Seq2Exp-soft (released checkpoints)"]["model"].update(
        seeds=[2, 3]), "weights.seq2exp-authors has no checkpoint for K562 seed 3"),
])
def test_config_errors_name_the_key(paper, edit, message):
    cfg = copy.deepcopy(paper)
    edit(cfg)
    with pytest.raises(ConfigError) as e:
        Plan(cfg, workdir="/w")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_chromosomes_are_checked_against_data_already_here(tmp_path):
    cfg = load("demo.yaml")
    split = tmp_path / "resources/assets/split/leave_chrom_out_crossvalidation_split_18377genes.csv"
    split.parent.mkdir(parents=True)
    split.write_text("ENSID,chrom,fold_11\nENSG1,chr1,train\nENSG2,chr2,train\n")
    cfg["chromosomes"] = ["chr1", "chr2", "chr7"]
    with pytest.raises(ConfigError, match="chromosomes lists chr7, which holds no gene of"):
        Plan(cfg, workdir=str(tmp_path))
    fai = tmp_path / "results/genome/hg38.ml.fa.fai"
    fai.parent.mkdir(parents=True)
    fai.write_text("chr1\t100\t6\t60\t61\n")
    cfg["chromosomes"] = ["chr1", "chr2"]
    with pytest.raises(ConfigError, match="chromosomes lists chr2, which is absent from the genome"):
        Plan(cfg, workdir=str(tmp_path))
