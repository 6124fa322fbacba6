"""The workflow itself, through real Snakemake runs: dry runs of the paper's config, lint, and the demo end to end."""

import os
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


def smk(*args, cwd=ROOT, check=True, timeout=1200):
    proc = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run."""
    table = output.split("Job stats:")[-1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m[1] != "total"}


def dry_run(*args, cwd=ROOT):
    p = smk("-n", *args, "--quiet", "rules", cwd=cwd)
    return job_counts(p.stdout + p.stderr)


def test_paper_config_dry_run_plans_every_table(tmp_path):
    # in an empty working directory: no asset is present
    counts = dry_run("--directory", str(tmp_path), "--configfile", str(ROOT / "config/config.yaml"))
    assert counts["download"] == 18
    assert counts["train"] == 95
    assert counts["gene_table"] == 3
    assert counts["shard"] == 3 * 23


def test_paper_table1_trains_three_cell_lines_by_five_seeds(tmp_path):
    p = smk("-n", "table1", "--directory", str(tmp_path), "--configfile", str(ROOT / "config/config.yaml"))
    runs = set(re.findall(r"results/runs/([^/]+)/([^/]+)/seed(\d+)/model\.pt", p.stdout))
    assert {(c, m) for c, m, _ in runs} == {
        (c, m) for c in ("K562", "GM12878", "H1")
        for m in ("L2000_h3k27ac+dnase+hic_K0", "L2000_h3k27ac+dnase+hic_K2_l1-1_l2-1")}
    assert {s for _, _, s in runs} == {"2", "22", "222", "2222", "22222"}
    assert len(runs) == 30


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


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """The demo workflow, run once for real into a fresh directory (the slow part of the suite)."""
    d = tmp_path_factory.mktemp("demo")
    smk("--directory", str(d), "--configfile", str(ROOT / "config/demo.yaml"), "--cores", "2", "all",
        timeout=1800)
    return d


def test_table2_alone_builds_only_what_it_needs(tmp_path):
    counts = dry_run("table2", "--directory", str(tmp_path), "--configfile", str(ROOT / "config/demo.yaml"))
    # one cell line's data only; the K sweep (0..3) and the lambda sweeps (1.0 is K2 again)
    assert counts["gene_table"] == 1 and counts["shard"] == 6
    assert counts["train"] == (4 + 2 + 2) * 1  # the demo sweeps table2 with one seed
    assert "parameter_table" not in counts and counts["metrics_table"] == 1


@pytest.mark.slow
def test_demo_end_to_end(demo_dir):
    tables = demo_dir / "results/tables"
    for t in ("table1", "table2", "table3", "table7", "table13", "table16"):
        assert (tables / f"{t}.csv").stat().st_size > 0 and (tables / f"{t}.md").stat().st_size > 0
    assert (demo_dir / "results/figures/figure_table2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    t1 = pd.read_csv(tables / "table1.csv")
    assert set(t1["cell"]) == {"synthA", "synthB", "synthC"}  # synthC came from config alone
    assert set(t1["row"]) == {"Caduceus w/ signals", "Prism"}
    assert (t1["n_seeds"] == 2).all()
    pearson = t1[t1["metric"] == "pearson"]
    assert (pearson["mean"] > 0.5).all(), pearson  # the synthetic biology is learnable

    t7 = pd.read_csv(tables / "table7.csv")
    mse = t7[t7["metric"] == "mse"].set_index("row")["mean"]
    assert mse["Drop h3k27ac"] > mse["Baseline (all signals)"]  # H3K27ac carries signal in the demo

    t2 = pd.read_csv(tables / "table2.csv", dtype={"row": str})
    assert list(dict.fromkeys(t2[t2["group"] == "K"]["row"])) == ["0", "1", "2", "3"]
    assert "Prism" in (tables / "table1.md").read_text() and "paper" in (tables / "table1.md").read_text()

    t13 = pd.read_csv(tables / "table13.csv")
    assert set(t13["row"]) == {"Prism (cell-specific)", "Prism (mixed-training)"}
    assert set(t13["cell"]) == {"synthA", "synthB"}
    t16 = pd.read_csv(tables / "table16.csv")
    weight = t16[t16["metric"] == "mean_weight"]["mean"]
    assert len(weight) == 1 and 0 < weight.iloc[0] < 1

    # the downloads were verified and pinned
    assert (demo_dir / "resources/checksums.lock.json").exists()
    assert list((demo_dir / "resources").rglob("*.part")) == []


@pytest.mark.slow
def test_demo_second_run_has_nothing_to_do(demo_dir):
    p = smk("-n", "all", "--directory", str(demo_dir), "--configfile", str(ROOT / "config/demo.yaml"))
    assert "Nothing to be done" in p.stdout + p.stderr
