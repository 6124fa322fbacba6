"""Training and evaluation on real shards of the demo mirror: schedule, determinism, resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from prism.data import CellData
from prism.evaluate import apply_variant, evaluate_run, load_model
from prism.runs import ModelSpec, Run
from prism.train import EpochBatchSampler, lr_at, train_run

CELL = "synthA"
MODEL = {"d_model": 8, "n_layer": 1, "d_state": 4, "d_conv": 4, "expand": 2, "confounder_width": 4,
         "center_len": 2000}
ARCH = {"name": "prism", "kind": "prism", "model": MODEL}
TRAINING = {"batch_size": 8, "max_steps": 60, "lr": 3e-3, "warmup_start_lr": 1e-4, "warmup_steps": 6,
            "min_lr": 3e-4, "weight_decay": 1e-6, "betas": [0.9, 0.95], "grad_clip": 1.0, "val_per_epoch": 2,
            "checkpoint_every": 7, "precision": "auto", "num_workers": 0}


def build_cell_shards(mirror, fasta, gene_tables, cell, out) -> list[str]:
    """The workflow's shards of one demo cell line (window 400: every test length fits)."""
    from prism.preprocess import build_shard

    entry = mirror["cells"][cell]
    paths = []
    for chrom in mirror["chromosomes"]:
        p = out / f"{cell}_{chrom}.npz"
        build_shard(genes_tsv=gene_tables[cell], chrom=chrom, fasta=fasta,
                    tracks={"h3k27ac": entry["h3k27ac"]["path"], "dnase": entry["dnase"]["path"]},
                    hic={"path": entry["hic"]["path"], "normalization": "NONE", "resolution": 5000},
                    window=400, out=p)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def shards(demo_mirror, demo_fasta, demo_gene_tables, tmp_path_factory):
    paths = build_cell_shards(demo_mirror, demo_fasta, demo_gene_tables, CELL, tmp_path_factory.mktemp("shards"))
    return {"genes": str(demo_gene_tables[CELL]), "shards": paths}


def inputs(shards):
    return {"genes": [shards["genes"]], "shards": shards["shards"]}


def test_lr_schedule_warmup_then_cosine():
    t = {"lr": 5e-4, "warmup_start_lr": 1e-5, "warmup_steps": 5000, "min_lr": 1e-4, "max_steps": 50000}
    assert lr_at(0, t) == pytest.approx(1e-5)
    assert lr_at(2500, t) == pytest.approx((1e-5 + 5e-4) / 2)
    assert lr_at(5000, t) == pytest.approx(5e-4)
    assert lr_at(27500, t) == pytest.approx((5e-4 + 1e-4) / 2)
    assert lr_at(50000, t) == pytest.approx(1e-4)
    assert lr_at(60000, t) == pytest.approx(1e-4)


def test_epoch_batch_sampler_is_seeded_and_starts_at_a_step():
    s = EpochBatchSampler(30, 8, seed=2)
    first = list(s)
    assert len(first) == len(s) == 3 and all(len(b) == 8 for b in first)
    assert list(s) == first
    s.start_at(len(s))  # global step 3: epoch 1, a fresh permutation
    second = list(s)
    assert second != first
    s.start_at(len(s) + 2)  # global step 5: the third batch of epoch 1
    assert list(s) == second[2:]
    assert list(s) == second  # the skip applies once
    s.start_at(0)
    assert list(s) == first


def test_cell_data_batch(shards):
    data = CellData(CELL, shards["genes"], shards["shards"], ["h3k27ac", "hic", "dnase"], 200)
    rows = data.indices("train")[:5]
    b = data.batch(rows)
    assert b.seq.shape == (5, 200, 4) and b.signals.shape == (5, 3, 200) and b.features.shape == (5, 9)
    assert torch.all(b.seq.sum(-1) <= 1)
    assert set(np.unique(data.split)) == {"train", "valid", "test"}
    genes = pd.read_csv(shards["genes"], sep="\t").set_index("gene_id")
    assert np.allclose(b.target.numpy(), genes.loc[data.gene_id[rows], "target"].to_numpy(), atol=1e-6)
    only_seq = CellData(CELL, shards["genes"], shards["shards"], [], 100).batch(rows)
    assert only_seq.signals.shape == (5, 0, 100)


def _train(shards, out, spec=None, seed=2, log=lambda m: None, **overrides):
    run = Run((CELL,), spec or ModelSpec(length=200, K=2), seed)
    return train_run(run, {CELL: inputs(shards)}, ARCH, {**TRAINING, **overrides}, out, threads=1, log=log)


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_training_is_deterministic_and_evaluates(shards, tmp_path):
    a = _train(shards, tmp_path / "a")
    b = _train(shards, tmp_path / "b")
    sa, sb = _state(tmp_path / "a/model.pt"), _state(tmp_path / "b/model.pt")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["best_step"] == b["best_step"] and a["steps"] == 60
    history = pd.read_csv(tmp_path / "a/history.csv")
    assert {"train", "val"} == set(history["kind"]) and history["step"].max() == 60
    val_steps = list(history.loc[history["kind"] == "val", "step"])
    assert val_steps[-1] == 60 and len(val_steps) == len(set(val_steps)) > 1  # the last step is validated too

    tests = [(CELL, "full"), (CELL, "drop-h3k27ac"), (CELL, "weighted"), (CELL, "length-100")]
    out = evaluate_run(tmp_path / "a/model.pt", tests, {CELL: inputs(shards)}, tmp_path / "evaluation.json",
                       tmp_path / "evaluation.predictions.tsv", log=lambda m: None)
    r = json.loads((tmp_path / "evaluation.json").read_text())["results"]
    assert r == json.loads(json.dumps(out["results"])) and set(r) == {f"{c}/{v}" for c, v in tests}
    full, drop, weighted = r["synthA/full"], r["synthA/drop-h3k27ac"], r["synthA/weighted"]
    assert full["n"] == 120 and full["pearson"] > 0.3 and drop["mse"] != full["mse"]
    assert 0 < weighted["mean_weight"] < 1 and weighted["mse"] != full["mse"]
    assert r["synthA/length-100"]["mse"] != full["mse"]
    preds = pd.read_csv(tmp_path / "evaluation.predictions.tsv", sep="\t")
    assert len(preds) == 4 * 120 and list(preds.columns) == ["cell", "variant", "gene_id", "chrom", "target", "prediction"]
    model, meta = load_model(tmp_path / "a/model.pt")
    assert meta["spec"]["K"] == 2 and not model.training


def test_changed_settings_do_not_resume_old_checkpoints(shards, tmp_path):
    _train(shards, tmp_path / "r", max_steps=14)
    assert (tmp_path / "r/checkpoints/last.ckpt").exists()
    msgs = []
    run = Run((CELL,), ModelSpec(length=200, K=2), 2)
    train_run(run, {CELL: inputs(shards)}, ARCH, {**TRAINING, "max_steps": 14, "lr": 1e-3}, tmp_path / "r", threads=1,
              log=msgs.append)
    assert any("moved it to" in m for m in msgs) and not any("resuming" in m for m in msgs)
    assert (tmp_path / "r/checkpoints.superseded.1/last.ckpt").exists()  # kept, not deleted


def test_test_time_variants(shards):
    data = CellData(CELL, shards["genes"], shards["shards"], ["h3k27ac", "dnase"], 200)
    b = data.batch(data.indices("test")[:3])
    assert apply_variant(b, "full", ["h3k27ac", "dnase"]) == (b, "eval")
    d, mode = apply_variant(b, "drop-dnase", ["h3k27ac", "dnase"])
    assert mode == "eval" and (d.signals[:, 1] == 0).all() and torch.equal(d.signals[:, 0], b.signals[:, 0])
    short, _ = apply_variant(b, "length-100", ["h3k27ac", "dnase"])
    assert short.seq.shape[1] == 100 and torch.equal(short.signals, b.signals[..., 50:150])
    assert apply_variant(b, "weighted", ["h3k27ac", "dnase"])[1] == "weighted"
    with pytest.raises(ValueError, match="drop-c"):
        apply_variant(b, "drop-c", ["h3k27ac", "dnase"])


def test_signal_dropout_and_sequence_only_runs(shards, tmp_path):
    s = _train(shards, tmp_path / "ret", spec=ModelSpec(length=100, K=0, retention=0.5), max_steps=12)
    assert s["spec"]["retention"] == 0.5
    s = _train(shards, tmp_path / "seq", spec=ModelSpec(length=100, signals=(), K=0), max_steps=12)
    assert s["spec"]["signals"] == []


TRAIN_SCRIPT = textwrap.dedent("""
    import json, sys
    from prism.runs import ModelSpec, Run
    from prism.train import train_run
    a = json.loads(sys.argv[1])
    train_run(Run(("synthA",), ModelSpec(length=200, K=2), 2), {"synthA": {"genes": [a["genes"]], "shards": a["shards"]}},
              {"name": "prism", "kind": "prism", "model": a["model"]}, a["training"], a["out"], threads=1)
""")


def _start(shards, out):
    args = json.dumps({"genes": shards["genes"], "shards": shards["shards"], "model": MODEL,
                       "training": TRAINING, "out": str(out)})
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _kill_after(proc, out, step):
    """SIGKILL the training process once its history shows it reached `step`."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        h = out / "history.csv"
        if h.exists() and (lines := h.read_text().splitlines()[1:]) and max(int(x.split(",")[0]) for x in lines) >= step:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.02)
    raise AssertionError(f"training finished or stalled before step {step}: {proc.communicate()[0][-2000:]}")


def test_mixed_cell_training_draws_cells_per_gene(shards, demo_mirror, demo_fasta, demo_gene_tables, tmp_path):
    b_shards = build_cell_shards(demo_mirror, demo_fasta, demo_gene_tables, "synthB", tmp_path)
    datas = [CellData(CELL, shards["genes"], shards["shards"], ["h3k27ac"], 100),
             CellData("synthB", str(demo_gene_tables["synthB"]), b_shards, ["h3k27ac"], 100)]
    from prism.data import GeneIndex

    train = GeneIndex(datas, "train", pick_cell=True)
    sampler = EpochBatchSampler(len(train), 8, seed=2, n_choices=train.n_choices)
    keys = [k for batch in sampler for k in batch]
    cells = np.array([c for _, c in keys])
    assert 0.3 < cells.mean() < 0.7  # both cell lines' signals are drawn
    batch = train.collate([train[k] for k in keys[:8]])
    for (i, c), target in zip(keys[:8], batch.target.numpy()):
        assert target == pytest.approx(datas[c].target[train.rows[i, c]])
    assert len(GeneIndex(datas, "valid")) == 240  # validation pools both cell lines' valid genes
    run = Run((CELL, "synthB"), ModelSpec(length=100, signals=("h3k27ac",), K=2), 2)
    s = train_run(run, {CELL: inputs(shards), "synthB": {"genes": [str(demo_gene_tables["synthB"])], "shards": b_shards}},
                  ARCH, {**TRAINING, "max_steps": 10}, tmp_path / "mixed", threads=1, log=lambda m: None)
    assert s["cells"] == [CELL, "synthB"]


@pytest.mark.slow
def test_sigkill_twice_then_resume_equals_uninterrupted(shards, tmp_path):
    _train(shards, tmp_path / "straight")
    out = tmp_path / "killed"
    _kill_after(_start(shards, out), out, 20)  # mid first epoch (45 steps of 8 genes)
    first = torch.load(out / "checkpoints/last.ckpt", weights_only=False)["global_step"]
    _kill_after(_start(shards, out), out, 50)  # second epoch
    second = torch.load(out / "checkpoints/last.ckpt", weights_only=False)["global_step"]
    assert 0 < first < second < 60
    proc = _start(shards, out)
    log = proc.communicate()[0]
    assert proc.returncode == 0, log[-3000:]
    assert "resuming from" in log
    a, b = _state(tmp_path / "straight/model.pt"), _state(out / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"
    ha = pd.read_csv(tmp_path / "straight/history.csv")
    hb = pd.read_csv(out / "history.csv")
    pd.testing.assert_frame_equal(ha[ha.kind == "val"].reset_index(drop=True), hb[hb.kind == "val"].reset_index(drop=True))


CTRL_C_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    from prism.runs import ModelSpec, Run
    from prism.train import train_run

    a = json.loads(sys.argv[1])

    def train(name, workers, ctrl_c_at=None):
        def log(message):  # Ctrl-C: SIGINT to this process as the progress line of step ctrl_c_at is logged
            if ctrl_c_at and message.startswith(f"step {ctrl_c_at}/"):
                os.kill(os.getpid(), signal.SIGINT)
            if message.startswith("training from"):
                print(f"{name}: {message}", flush=True)
        train_run(Run(("synthA",), ModelSpec(length=100, K=2), 2),
                  {"synthA": {"genes": [a["genes"]], "shards": a["shards"]}},
                  {"name": "prism", "kind": "prism", "model": a["model"]}, {**a["training"], "num_workers": workers},
                  f"{a['out']}/{name}", threads=1, log=log)

    train("straight", 0)
    for workers, ctrl_c_at in a["stops"]:
        name = f"stopped{workers}"
        for step in ctrl_c_at:
            try:
                train(name, workers, step)
            except SystemExit:  # Lightning's exit after the KeyboardInterrupt that follows the checkpoint
                ckpt = torch.load(f"{a['out']}/{name}/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
                print(f"{name}: stopped at step {ckpt['global_step']} of epoch {ckpt['epoch']}", flush=True)
        train(name, workers)
""")


def test_ctrl_c_after_an_epochs_last_validation_then_mid_epoch_resumes_to_the_uninterrupted_model(shards, tmp_path):
    # 360 training genes in batches of 30: 12 batches an epoch, validation every 6 steps, a progress line
    # every 3. Ctrl-C at step 12 saves after the validation of the epoch's last batch, where Lightning
    # still counts the epoch as running; Ctrl-C at 15 saves mid-epoch. Then Ctrl-C at 15 with a data-loader
    # worker, which draws its batches as soon as the loader's iterator exists. The runs go in a fresh
    # interpreter: forking a worker from this one (hictkpy is imported for the shards) can deadlock.
    training = {**TRAINING, "batch_size": 30, "max_steps": 18, "checkpoint_every": 1000}
    args = json.dumps({"genes": shards["genes"], "shards": shards["shards"], "model": MODEL, "training": training,
                       "out": str(tmp_path), "stops": [[0, [12, 15]], [1, [15]]]})
    p = subprocess.run([sys.executable, "-c", CTRL_C_SCRIPT, args], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert p.stdout.splitlines() == [
        "straight: training from step 0 to 18",
        "stopped0: training from step 0 to 18", "stopped0: stopped at step 12 of epoch 0",
        "stopped0: training from step 12 to 18", "stopped0: stopped at step 15 of epoch 1",  # not epoch 2
        "stopped0: training from step 15 to 18",
        "stopped1: training from step 0 to 18", "stopped1: stopped at step 15 of epoch 1",
        "stopped1: training from step 15 to 18"]
    a = _state(tmp_path / "straight/model.pt")
    for w in (0, 1):
        b = _state(tmp_path / f"stopped{w}/model.pt")
        assert all(torch.equal(a[k], b[k]) for k in a), f"resumed run ({w} workers) differs from the uninterrupted one"
        assert (tmp_path / f"stopped{w}/history.csv").read_text() == (tmp_path / "straight/history.csv").read_text()


def test_input_fingerprint_reuses_md5_of_untouched_files(tmp_path):
    from prism.train import file_md5, input_fingerprint

    a, b = tmp_path / "a.tsv", tmp_path / "b.npz"
    a.write_text("x\n")
    b.write_bytes(b"\0" * 10)
    md5s, cache = input_fingerprint([str(a), str(b)])
    assert md5s == {str(a): file_md5(a), str(b): file_md5(b)}
    # an untouched file keeps its cached md5 without being read: a cache entry for this size and time wins
    cache[str(b)]["md5"] = "0" * 32
    assert input_fingerprint([str(a), str(b)], cache)[0][str(b)] == "0" * 32
    b.write_bytes(b"\1" * 10)  # new content: a new modification time, so it is hashed again
    os.utime(b, ns=(cache[str(b)]["mtime_ns"] + 1, cache[str(b)]["mtime_ns"] + 1))
    assert input_fingerprint([str(a), str(b)], cache)[0][str(b)] == file_md5(b) != "0" * 32


def test_training_imports_lightning_without_torchmetrics_optional_packages():
    """prism.train keeps torchmetrics from importing transformers, scipy, matplotlib and PIL (half of every
    training job's start-up); each stays importable (the Enformer baseline imports transformers, the figures
    matplotlib), and torchmetrics still works."""
    code = ("import sys; import prism.train; "
            "found = [p for p in ('transformers', 'scipy', 'matplotlib', 'PIL') if p in sys.modules]; "
            "assert not found, f'imported: {found}'; "
            "import torch, torchmetrics; m = torchmetrics.MeanSquaredError(); m.update(torch.zeros(3), torch.ones(3)); "
            "assert float(m.compute()) == 1.0; import prism.model.enformer; assert 'transformers' in sys.modules; "
            "import scipy.signal, matplotlib.pyplot")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
    assert p.returncode == 0, p.stderr[-2000:]
