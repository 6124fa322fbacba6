"""The workflow itself, through real Snakemake runs: dry runs of the paper's config, lint, the demo end to end
(every target), a table declared only in a test config, the report in a real headless browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
DEMO = ["--configfile", str(ROOT / "config/demo.yaml")]


def smk(*args, cwd=ROOT, check=True, timeout=1200):
    proc = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run."""
    table = output.split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m[1] != "total"}


def dry_run(*args, cwd=ROOT):
    p = smk("-n", *args, "--quiet", "rules", cwd=cwd)
    return job_counts(p.stdout + p.stderr)


def planned_runs(output: str) -> set[tuple[str, str, str]]:
    return set(re.findall(r"results/runs/([^/\s]+)/([^/\s]+)/seed(\d+)/model\.pt", output))


def test_paper_config_dry_run_plans_every_table(tmp_path):
    # in an empty working directory: no asset is present
    counts = dry_run("paper", "--directory", str(tmp_path), "--configfile", str(ROOT / "config/config.yaml"))
    assert counts["train"] > 300 and counts["evaluate"] == counts["train"] + counts["import_released"]
    assert counts["import_released"] == 15  # the authors' Prism (2 cell lines x 5 seeds) and Seq2Exp (K562 x 5)
    assert counts["gene_table"] == 3 and counts["shard"] == 3 * 23 and counts["store_tracks"] == 3 * 23
    assert counts["metrics_table"] >= 13 and counts["figure"] == 5  # figures 1, 2, 5, 6 and Table 2 drawn
    for rule in ("parameter_table", "hyperparameter_table", "data_statistics_table", "peaks", "candidates"):
        assert counts.get(rule, 0) >= 1, rule


def test_paper_table1_runs_every_architecture_on_three_cell_lines(tmp_path):
    p = smk("-n", "table1", "--directory", str(tmp_path), "--configfile", str(ROOT / "config/config.yaml"))
    runs = planned_runs(p.stdout)
    assert {c for c, _, _ in runs} == {"K562", "GM12878", "H1"}
    assert {s for _, _, s in runs} == {"2", "22", "222", "2222", "22222"}
    archs = {m.split("_L")[0] if not m.startswith("L") else "prism" for _, m, _ in runs}
    assert {"prism", "enformer", "hyenadna", "mamba", "caduceus", "epinformer"} <= archs
    assert ("K562", "caduceus-signals_L200000_h3k27ac+dnase+hic_K0", "2") in runs and ("K562", "L2000_h3k27ac+dnase+hic_K0", "2") in runs


def test_lint_is_clean():
    p = smk("--lint")
    assert "Congratulations" in p.stdout + p.stderr
    fmt = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow/rules"], cwd=ROOT,
                         capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stderr


def test_config_error_is_one_line(tmp_path):
    cfg = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    cfg["experiments"]["table2"]["cells"] = ["synthZ"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    p = smk("-n", "--directory", str(tmp_path), "--configfile", str(bad), check=False)
    assert p.returncode != 0
    assert "config error: experiments.table2.cells names 'synthZ', which is not under cell_lines:" in p.stdout + p.stderr


def test_table2_alone_builds_only_what_it_needs(tmp_path):
    counts = dry_run("table2", "--directory", str(tmp_path), *DEMO)
    # one cell line's data only; the K sweep (0..3) and the lambda sweeps (1.0 is K2 again)
    assert counts["gene_table"] == 1 and counts["shard"] == 6
    assert counts["train"] == 4 + 2 + 2 and counts["evaluate"] == 8  # one seed in the demo's sweep
    assert "store_tracks" not in counts and "parameter_table" not in counts and counts["metrics_table"] == 1


@pytest.mark.slow
def test_demo_builds_every_target(demo_dir):
    plan_targets = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    for t in plan_targets["experiments"]:
        for ext in ("csv", "md", "html"):
            assert (demo_dir / f"results/tables/{t}.{ext}").stat().st_size > 0, (t, ext)
    for f in plan_targets["figures"]:
        assert (demo_dir / f"results/figures/{f}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (demo_dir / f"results/figures/{f}.svg").read_bytes()[:400]
    tables = demo_dir / "results/tables"

    t1 = pd.read_csv(tables / "table1.csv")
    assert set(t1["cell"]) == {"synthA", "synthB"}  # synthD has no CAGE
    t15 = pd.read_csv(tables / "table15.csv")
    assert set(t15["cell"]) == {"synthC"}  # a cell line from config alone: its CAGE as a bigWig, its own signals
    assert set(t1["row"]) == set(plan_targets["experiments"]["table1"]["rows"])  # every row trained
    assert (t1[t1["row"] == "Prism"]["n_seeds"] == 2).all()
    pearson = t1[t1["metric"] == "pearson"].set_index(["row", "cell"])["mean"]
    assert (pearson.loc["Prism"] > 0.5).all(), pearson  # the synthetic biology is learnable

    t7 = pd.read_csv(tables / "table7.csv")
    mse = t7[t7["metric"] == "mse"].set_index("row")["mean"]
    assert mse["Drop h3k27ac"] > mse["Baseline (all signals)"]  # H3K27ac carries signal in the demo

    t2 = pd.read_csv(tables / "table2.csv", dtype={"row": str})
    assert list(dict.fromkeys(t2[t2["group"] == "K"]["row"])) == ["0", "1", "2", "3"]
    assert "trained differently" in (tables / "table1.md").read_text()  # demo scale is not the paper's

    t16 = pd.read_csv(tables / "table16.csv")
    weight = t16[t16["metric"] == "mean_weight"]["mean"]
    assert len(weight) == 1 and 0 < weight.iloc[0] < 1
    t8 = pd.read_csv(tables / "table8.csv").set_index(["key", "cell"])["value"]
    assert 0 < t8[("pct_contact", "synthA")] <= 100

    # predictions for a cell line without expression
    pred = next((demo_dir / "results/predictions/synthD").glob("*.tsv"))
    df = pd.read_csv(pred, sep="\t")
    assert len(df) > 500 and df["prediction"].notna().all()
    assert pred.with_suffix(".bed").read_text().startswith("track")

    # the downloads were verified and pinned
    lock = json.loads((demo_dir / "resources/checksums.lock.json").read_text())
    assert any("weights" in k for k in lock)
    assert list((demo_dir / "resources").rglob("*.part")) == []


@pytest.mark.slow
def test_demo_second_run_has_nothing_to_do_and_the_folder_moves(demo_dir, tmp_path):
    p = smk("-n", "all", "--directory", str(demo_dir), *DEMO)
    assert "Nothing to be done" in p.stdout + p.stderr
    moved = tmp_path / "moved"
    shutil.copytree(demo_dir, moved, symlinks=True)
    p = smk("-n", "all", "--directory", str(moved), *DEMO)
    assert "Nothing to be done" in p.stdout + p.stderr, p.stdout[-3000:]


@pytest.mark.slow
def test_a_table_only_in_a_test_config_is_planned_built_and_reported(demo_dir, tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"experiments": {"my_table": {
        "title": "My table: Prism against Caduceus on synthA, declared in a test config", "section": "9 Mine",
        "cells": ["synthA"], "rows": {"Prism (mine)": {}, "Caduceus (mine)": {"K": 0}}}}}))
    args = ["--directory", str(demo_dir), *DEMO, str(extra)]
    counts = dry_run("my_table", *args)
    assert counts == {"metrics_table": 1, "my_table": 1}  # its runs are the demo's: nothing is trained again
    smk("my_table", *args, "--cores", "1")
    md = (demo_dir / "results/tables/my_table.md").read_text()
    assert md.startswith("# My table") and "Prism (mine)" in md
    report = tmp_path / "report.html"
    smk("all", "my_table", *args, "--report", str(report))
    assert "My table: Prism against Caduceus" in report.read_text()


def _browser() -> str | None:
    for name in ("chromium-headless-shell", "chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.slow
def test_report_renders_every_table_in_a_real_browser(demo_dir, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no headless Chromium installed (make setup installs Debian's chromium-headless-shell as root)")
    report = tmp_path / "report.html"
    smk("all", "--directory", str(demo_dir), *DEMO, "--report", str(report))
    flags = [browser, "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chr'}",
             "--virtual-time-budget=15000", "--window-size=1400,1000"]
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=180, check=True)
    dom = subprocess.run([*flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=180,
                         check=True).stdout
    from prism.plan import Plan

    plan = Plan(yaml.safe_load((ROOT / "config/demo.yaml").read_text()), workdir=str(demo_dir))
    for t in plan.targets():
        assert t.title in dom, t.name  # listed by section on the landing page, and captioned under Results
    import numpy as np
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] > 500 and pixels[..., :3].std() > 0.05  # not blank
