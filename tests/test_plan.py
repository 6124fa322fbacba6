"""Run identity and the workflow plan, from the real config files (no Snakemake, no torch)."""

import copy
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


def test_model_id_round_trips_and_is_canonical():
    prism = ModelSpec()
    assert prism.model_id == "L2000_h3k27ac+dnase+hic_K2_l1-1_l2-1"
    assert ModelSpec.parse(prism.model_id) == prism.canonical()
    for spec in [ModelSpec(K=0), ModelSpec(lambda1=0.0), ModelSpec(K=0, lambda2=10.0)]:
        assert spec.model_id == "L2000_h3k27ac+dnase+hic_K0"
    odd = ModelSpec(length=100, signals=("dnase",), K=6, lambda1=0.1, lambda2=10.0, retention=0.7)
    assert odd.model_id == "L100_dnase_K6_l1-0.1_l2-10_ret0.7"
    assert ModelSpec.parse(odd.model_id) == odd.canonical()
    assert ModelSpec.parse("L500_nosig_K0") == ModelSpec(length=500, signals=(), K=0).canonical()


def test_bad_run_settings_are_named():
    with pytest.raises(RunError, match="not canonical"):
        ModelSpec.parse("L2000_h3k27ac+dnase+hic_K0_l1-1_l2-1")
    with pytest.raises(RunError, match="retention"):
        ModelSpec(retention=0.0)
    with pytest.raises(RunError, match="unknown model setting"):
        ModelSpec.from_settings({"lamda1": 1})
    with pytest.raises(RunError, match="cell line name"):
        Run(("K5+62",), ModelSpec(), 2)


def test_run_path_round_trip():
    run = Run(("K562", "GM12878"), ModelSpec(K=4), 22)
    assert run.path == "results/runs/K562+GM12878/L2000_h3k27ac+dnase+hic_K4_l1-1_l2-1/seed22"
    assert Run.from_path(run.path + "/model.pt") == Run(run.cells, run.model.canonical(), 22)


def test_paper_plan_shares_runs_between_tables(paper):
    plan = Plan(paper, workdir="/w")
    t1, t2, t7 = (set(r.path for r in plan.runs(t)) for t in ("table1", "table2", "table7"))
    assert len(t1) == 2 * 3 * 5  # two models x K562, GM12878, H1 x five seeds
    assert {Run.from_path(p).cells for p in t1} == {("K562",), ("GM12878",), ("H1",)}
    assert len(t2) == (7 + 2 + 2) * 5 - 5 * 0  # K 0..6, lambda1 0.1/10, lambda2 0.1/10 (1.0 is K2 again)
    assert len(t2 & t1) == 2 * 5  # K = 0 is Caduceus w/ signals, K = 2 is Prism: the same runs as table1
    assert t7 <= t1  # table7's all-signals Caduceus is table1's
    t13 = plan.runs("table13")
    assert {r.cells for r in t13} == {("K562",), ("GM12878",), ("K562", "GM12878")}
    assert {r.path for r in t13 if len(r.cells) == 1} <= t1  # cell-specific Prism is table1's
    t16 = plan.evaluations["table16"]
    assert {e.run.model.retention for e in t16} == {0.9, 0.7, 0.5, 1.0}
    assert {e.variant for e in t16 if e.run.model.K == 2} == {"weighted"}
    assert len(plan.runs()) == 75 + 5 + 15  # + mixed-cell Prism, + three dropout rates


def test_paper_assets(paper):
    plan = Plan(paper, workdir="/w")
    a = plan.assets["resources/encode/ENCFF465GBD.bigWig"]
    assert a.url == "https://www.encodeproject.org/files/ENCFF465GBD/@@download/ENCFF465GBD.bigWig"
    assert a.metadata_url == "https://www.encodeproject.org/files/ENCFF465GBD/?format=json&frame=object"
    assert a.expect == {"assembly": "GRCh38"}
    h = plan.assets["resources/4dn/4DNFITUOMFUQ.hic"]
    assert h.url == "https://data.4dnucleome.org/files-processed/4DNFITUOMFUQ/@@download/4DNFITUOMFUQ.hic"
    assert h.auth_env == ("FOURDN_ACCESS_KEY", "FOURDN_SECRET_KEY")
    assert plan.signal("K562", "hic") == ("resources/4dn/4DNFITUOMFUQ.hic", "hic")
    assert set(plan.bigwig_tracks("K562")) == {"h3k27ac", "dnase", "h3k4me3"}
    assert plan.gene_table_inputs("H1")["pa_dnase"] == "resources/encode/ENCFF232GUZ.bigWig"
    assert len(plan.assets) == 18
    fp = plan.assets["resources/encode/ENCSR000EOT.footprints.bigBed"]
    assert fp.resolve["experiment_url"] == "https://www.encodeproject.org/experiments/ENCSR000EOT/?format=json"
    assert fp.resolve["select"] == {"file_format": "bigBed", "assembly": "GRCh38", "output_type": "footprints"}
    assert fp.resolve["download"].format(accession="ENCFF1") == \
        "https://www.encodeproject.org/files/ENCFF1/@@download/ENCFF1.bigBed"
    assert plan.signal("K562", "footprints") == ("resources/encode/ENCSR000EOT.footprints.bigBed", "bigbed")


def test_demo_plan_uses_the_mirror():
    plan = Plan(load("demo.yaml"), workdir="/tmp/x")
    assert plan.assets["resources/assets/genome/hg38.ml.fa.gz"].url == "file:///tmp/x/mirror/genome/hg38.ml.fa.gz"
    assert {r.cells[0] for r in plan.runs("table1")} == {"synthA", "synthB", "synthC"}


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["experiments"]["table2"].update(cells=["K999"]), "experiments.table2.cells names 'K999'"),
    (lambda c: c["cell_lines"]["K562"]["expression"].update(asset="nope"), "cell_lines.K562.expression.asset"),
    (lambda c: c["experiments"]["table7"].update(drop=["h3k4me3"]), "experiments.table7.drop names 'h3k4me3'"),
    (lambda c: c["run_defaults"].update(signals=["h3k27ac", "dnase", "hic", "atac"]), "has no signal 'atac'"),
    (lambda c: c["run_defaults"].update(length=20000), "preprocess.window"),
    (lambda c: c.pop("sources"), "sources.encode is not configured"),
])
def test_config_errors_name_the_key(paper, edit, message):
    cfg = copy.deepcopy(paper)
    edit(cfg)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        Plan(cfg, workdir="/w")
