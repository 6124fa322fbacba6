"""Reruns of a training job through real Snakemake runs of a one-run demo: each one finishes, with the same
model when its inputs are unchanged and a retrained one when they changed.

One demo directory is prepared per module (a tiny config derived from config/demo.yaml: one cell line, three
chromosomes, one Table 1 row, 60 steps); each case works on a copy of it. The demo mirror lives outside
the copies and the config names it by absolute path, so a copy plans exactly what the original would.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
MAX_STEPS = 60
#: the jobs' scripts import prism from this checkout, whatever is installed
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}


def tiny_config(mirror: Path, path: Path) -> Path:
    """config/demo.yaml cut down to one cell line (synthB), chr1/chr3/chr22, Prism in Table 1, 60 steps."""
    cfg = yaml.safe_load((ROOT / "config/demo.yaml").read_text())

    def pin(x):  # the mirror by absolute path, not {workdir}: copies of the directory plan the same jobs
        if isinstance(x, dict):
            return {k: pin(v) for k, v in x.items()}
        return x.replace("{workdir}/mirror", str(mirror)) if isinstance(x, str) else x

    cfg["demo"] = {**cfg["demo"], "mirror": str(mirror), "n_genes": 200}
    cfg["sources"], cfg["assets"] = pin(cfg["sources"]), pin(cfg["assets"])
    for unused in ("abc_synthA", "cage_synthC"):
        del cfg["assets"][unused]
    cfg["chromosomes"] = ["chr1", "chr3", "chr22"]  # train, valid, test
    cfg["cell_lines"] = {"synthB": cfg["cell_lines"]["synthB"]}
    cfg["architectures"] = {"prism": cfg["architectures"]["prism"]}
    cfg["architectures"]["prism"]["model"].update(d_model=8, n_layer=1, d_state=4)
    cfg.pop("weights")
    # 64 training genes: 8 batches an epoch, validation every 4 steps, so checkpoints at steps 10, 20 (after
    # a validation) and 40 (after a validation at an epoch's end) cover every way a checkpoint is taken
    cfg["training"].update(max_steps=MAX_STEPS, checkpoint_every=10, warmup_steps=5)
    cfg["seeds"] = [2]
    cfg["experiments"] = {"table1": {"cells": "all", "rows": {"Prism": {}}}}
    cfg["figures"] = {}
    cfg.pop("predictions")
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def smk_cmd(workdir: Path, config: Path, *args: str) -> list[str]:
    return [*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(config), "--cores", "2", *args]


def smk(workdir: Path, config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(smk_cmd(workdir, config, *args), cwd=ROOT, env=ENV, capture_output=True, text=True,
                       timeout=600)
    if check and p.returncode:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


def weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The demo directory after one uninterrupted run: its config, run folder, model weights and history."""
    base = tmp_path_factory.mktemp("reruns")
    config = tiny_config(base / "mirror", base / "tiny.yaml")
    d = base / "prepared"
    smk(d, config, "table1", "--until", "train")
    (model,) = d.glob("results/runs/synthB/*/seed2/model.pt")
    run = model.parent.relative_to(d)
    log = Path("results/logs/train") / run.relative_to("results/runs").parent / "seed2.log"
    assert "training from step 0 to 60" in (d / log).read_text()
    return {"dir": d, "config": config, "run": run, "log": log, "weights": weights(model),
            "history": (model.parent / "history.csv").read_text()}


@pytest.fixture
def case(prepared, tmp_path):
    """A copy of the prepared directory (times kept, so Snakemake sees it as up to date)."""
    d = tmp_path / "work"
    shutil.copytree(prepared["dir"], d, symlinks=True)
    return d


def train_log(case: Path, prepared) -> str:
    """The log of the latest train job."""
    return (case / prepared["log"]).read_text().split("rule train:")[-1]


def assert_unchanged(case: Path, prepared):
    run = case / prepared["run"]
    assert same_weights(weights(run / "model.pt"), prepared["weights"]), "the model changed"
    assert (run / "history.csv").read_text() == prepared["history"]


@pytest.mark.slow
def test_forced_reruns_of_a_finished_run_finish_without_training(prepared, case):
    target = str(prepared["run"] / "model.pt")
    for force in (["-R", "train"], ["-f"]):
        p = smk(case, prepared["config"], target, *force)
        assert "1 of 1 steps (100%) done" in p.stdout + p.stderr
        log = train_log(case, prepared)
        assert "is complete (step 60 of 60, same settings and inputs): nothing to train" in log
        assert "training from step" not in log
        assert_unchanged(case, prepared)


def _group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _checkpoint_step(path: Path) -> int:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["global_step"]
    except (OSError, RuntimeError, EOFError):
        return -1


def interrupt(case: Path, prepared, sig: int, *options: str, after: int) -> int:
    """Run Snakemake for the run's model; once a checkpoint past step `after` exists, send `sig` to
    Snakemake's process group (what Ctrl-C or a lost node does) and wait until all of it has ended.
    Returns the step of the checkpoint left behind."""
    proc = subprocess.Popen(smk_cmd(case, prepared["config"], str(prepared["run"] / "model.pt"), *options),
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    last = case / prepared["run"] / "checkpoints/last.ckpt"
    deadline = time.monotonic() + 300
    while not (last.exists() and _checkpoint_step(last) > after):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    out = proc.communicate(timeout=120)[0]
    while _group_alive(proc.pid):
        assert time.monotonic() < deadline, "the interrupted training did not stop"
        time.sleep(0.1)
    assert proc.returncode != 0, out[-3000:]
    step = _checkpoint_step(last)
    assert after < step < MAX_STEPS, f"checkpoint at step {step}: the training was not interrupted"
    return step


@pytest.mark.slow
def test_rerun_incomplete_after_sigint_and_after_sigkill_resumes_to_the_same_model(prepared, case):
    run = case / prepared["run"]
    for name in ("checkpoints", "model.pt", "history.csv"):  # train this run again, from scratch
        shutil.rmtree(run / name) if name == "checkpoints" else (run / name).unlink()

    first = interrupt(case, prepared, signal.SIGINT, after=0)  # Ctrl-C
    assert f"SIGINT: saved {prepared['run']}/checkpoints/last.ckpt at step {first}" in train_log(case, prepared)

    second = interrupt(case, prepared, signal.SIGKILL, "--rerun-incomplete", after=first)
    log = train_log(case, prepared)
    assert f"resuming from {prepared['run']}/checkpoints/last.ckpt" in log
    assert f"training from step {first} to 60" in log
    assert second % 10 == 0  # an interval checkpoint: nothing ran after the kill

    smk(case, prepared["config"], "--unlock")  # the killed Snakemake left its lock
    smk(case, prepared["config"], str(prepared["run"] / "model.pt"), "--rerun-incomplete")
    assert f"training from step {second} to 60" in train_log(case, prepared)
    assert_unchanged(case, prepared)


@pytest.mark.slow
def test_rebuilt_shards_keep_the_model(prepared, case):
    # the shards rebuilt from unchanged inputs are the same bytes: the rerun train job trains nothing
    p = smk(case, prepared["config"], str(prepared["run"] / "model.pt"), "-R", "shard")
    out = p.stdout + p.stderr
    assert re.search(r"^shard\s+3$", out, re.M) and re.search(r"^train\s+1$", out, re.M), out[-2000:]
    assert "nothing to train" in train_log(case, prepared)
    assert_unchanged(case, prepared)


@pytest.mark.slow
def test_changed_shard_retrains_from_scratch(prepared, case):
    from prism.shards import read_shard, write_shard

    shard = case / "results/shards/synthB/chr1.npz"
    s = read_shard(shard)
    s["tracks"] = s["tracks"] * np.float32(2.0)  # the H3K27ac and DNase tracks of every chr1 gene, doubled
    write_shard(shard, **s)
    smk(case, prepared["config"], str(prepared["run"] / "model.pt"))
    log = train_log(case, prepared)
    run = case / prepared["run"]
    assert ("the inputs changed (results/shards/synthB/chr1.npz has other content; 1 of 4 files) since "
            f"{prepared['run']}/checkpoints was written: moved it to {prepared['run']}/checkpoints.superseded.1") in log
    assert "training from step 0 to 60" in log
    assert (run / "checkpoints.superseded.1/last.ckpt").exists()
    assert not same_weights(weights(run / "model.pt"), prepared["weights"]), "the model was not retrained"
