"""profiles/slurm on a real one-node SLURM with two emulated GPUs (tests/slurm/start-cluster.sh).

The cluster is started by a module fixture; where the machine cannot run it (not root, no apt-get, no
network to Debian) the tests are skipped with the script's reason. The runs use the demo's Table 7 with
one seed: data jobs on the `cpu` partition, one training run and its four evaluations on `gpu`.
A second profile, written into tmp, adapts profiles/slurm to the test cluster (account, squeue status,
threads and memory that fit two CPUs); everything else comes from profiles/slurm itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles/slurm"
START, STOP = ROOT / "tests/slurm/start-cluster.sh", ROOT / "tests/slurm/stop-cluster.sh"
SKIP_STATUS = 77  # start-cluster.sh: this machine cannot run a cluster
TARGET = "table7"


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.fixture(scope="session")  # stopped at the session's end: see below
def cluster():
    """The test cluster, up until every test has run: Snakemake imports its SLURM executor plugin at every
    start, and the plugin runs ``scontrol show config`` then, which waits 10 s when scontrol is installed
    but no controller answers (every later Snakemake call in the suite would pay that)."""
    p = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=1200)
    if p.returncode == SKIP_STATUS:
        pytest.skip(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "start-cluster.sh: skipped")
    assert p.returncode == 0, f"start-cluster.sh failed:\n{p.stdout}\n{p.stderr}"
    started = p.stdout.strip().endswith("cluster: started")
    yield p.stdout
    if started:  # leave a cluster that was already running as it was
        subprocess.run(["bash", str(STOP)], capture_output=True, text=True, timeout=120)


def cluster_profile(tmp_path: Path) -> Path:
    """A second profile for the test cluster: only the keys that differ, derived from profiles/slurm."""
    base = yaml.safe_load((PROFILE / "config.v8+.yaml").read_text())

    def fit(res: dict) -> dict:
        res = dict(res)
        if "slurm_partition" in res:  # the EDIT lines: this cluster's partitions
            res["slurm_partition"] = "gpu" if res.get("gpu") else "cpu"
        if "mem_mb" in res:  # a two-CPU node: at most 4 GB a job (times the attempt)
            res["mem_mb"] = re.sub(r"^\s*(\d+)", lambda m: str(min(int(m[1]), 4000)), str(res["mem_mb"]))
        return res

    override = {
        "slurm-status-command": "squeue",  # no accounting here
        "slurm-init-seconds-before-status-checks": 5,
        "slurm-keep-successful-logs": True,  # the tests read the logs of successful jobs
        "jobs": 50,
        "default-resources": {**fit(base["default-resources"]), "slurm_account": "prismtest"},
        "set-threads": {rule: 1 for rule in base["set-threads"]},  # as the local run: one thread a job
        "set-resources": {rule: fit(res) for rule, res in base["set-resources"].items()},
    }
    d = tmp_path / "testcluster-profile"
    d.mkdir()
    (d / "config.v8+.yaml").write_text(yaml.safe_dump(override, sort_keys=False))
    return d


def write_config(path: Path, **cfg) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake_cmd(target: str, *options: str, configfiles=()) -> list[str]:
    """Targets before --configfile, which takes several files (the demo's, then overrides)."""
    return [sys.executable, "-m", "snakemake", target, "-s", str(ROOT / "Snakefile"), *options,
            "--configfile", str(ROOT / "config/demo.yaml"), *map(str, configfiles)]


def slurm_cmd(target: str, profile: Path, configfiles=(), timeout: int = 600) -> list[str]:
    # a hung run ignores SIGTERM; SIGINT stops it (and cancels its SLURM jobs)
    return ["timeout", "-s", "INT", "-k", "30", str(timeout),
            *snakemake_cmd(target, "--profile", str(PROFILE), "--profile", str(profile), "--verbose",
                           configfiles=configfiles)]


def submissions(out: str) -> list[tuple[str, str, str]]:
    """(rule, SLURM job id, SLURM log path) of every job the run submitted."""
    return [(m[3], m[1], m[2]) for m in re.finditer(
        r"has been submitted with SLURM jobid (\d+) \(log: (\S*/rule_(\w+)/\S+)\)", out)]


def sbatch_calls(out: str, rule: str) -> list[str]:
    return re.findall(rf"^sbatch call: (sbatch .*--comment rule_{rule}(?:_wildcards_\S+)? .*)$", out, re.M)


def tail(path: Path, n: int = 6000) -> str:
    return path.read_text()[-n:] if path.exists() else "(no output)"


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """Table 7 (one seed) through profiles/slurm, and the same locally at the same time for comparison."""
    base = tmp_path_factory.mktemp("slurm")
    cfg = write_config(base / "one-seed.yaml", seeds=[2])
    profile = cluster_profile(base)
    local_dir, slurm_dir = base / "local", base / "slurm"
    local_dir.mkdir()
    slurm_dir.mkdir()
    t0 = time.monotonic()
    with open(local_dir / "snakemake.out", "w") as lo, open(slurm_dir / "snakemake.out", "w") as so:
        local = subprocess.Popen(snakemake_cmd(TARGET, "--cores", "2", configfiles=[cfg]), cwd=local_dir,
                                 stdout=lo, stderr=subprocess.STDOUT)
        slurm = subprocess.run(slurm_cmd(TARGET, profile, [cfg], timeout=540), cwd=slurm_dir,
                               stdout=so, stderr=subprocess.STDOUT)
        local_rc = local.wait(timeout=600)
    return {"dir": slurm_dir, "local": local_dir, "rc": slurm.returncode, "local_rc": local_rc,
            "out": (slurm_dir / "snakemake.out").read_text(), "profile": profile,
            "seconds": time.monotonic() - t0}


def test_demo_runs_through_the_slurm_profile(slurm_run):
    d = slurm_run["dir"]
    assert slurm_run["rc"] == 0, tail(d / "snakemake.out")
    assert "steps (100%) done" in slurm_run["out"]
    assert slurm_run["local_rc"] == 0, tail(slurm_run["local"] / "snakemake.out")
    jobs = submissions(slurm_run["out"])
    rules = {rule for rule, _, _ in jobs}
    assert {"train", "evaluate", "shard", "gene_table"} <= rules
    assert "download" not in rules  # localrules run on the submitting node
    # SLURM's job logs are in one folder, relative to where snakemake started
    assert all(Path(log).is_relative_to(d / "results/logs/slurm") for _, _, log in jobs)


def test_gpu_jobs_ask_slurm_for_a_gpu(slurm_run):
    out = slurm_run["out"]
    for rule in ("train", "evaluate"):
        calls = sbatch_calls(out, rule)
        assert calls, f"no sbatch call for {rule}"
        for call in calls:
            assert "--gpus=1" in call and " -p gpu " in call and " -A prismtest " in call, call
            assert "--requeue" in call, call
    for call in sbatch_calls(out, "shard"):
        assert "--gpus" not in call and " -p cpu " in call, call

    (_, jobid, log), *_ = [j for j in submissions(out) if j[0] == "train"]
    # SLURM's view: the job got one of the node's (emulated) GPUs on the gpu partition
    show = sh("scontrol", "show", "job", "-d", jobid)  # finished jobs stay for MinJobAge
    assert "Partition=gpu" in show
    assert "TresPerJob=gres:gpu:1" in show and re.search(r"JOB_GRES=gpu:fake:1\b", show), show
    # the job's own log: the step that runs the rule asked for the GPU, and CUDA_VISIBLE_DEVICES was set
    text = Path(log).read_text()
    assert re.search(r"The call for this job is: srun .*--gpus=1", text)
    assert re.search(r"'CUDA_VISIBLE_DEVICES': '\d'", text)


def test_slurm_tables_equal_a_local_run(slurm_run):
    d, local = slurm_run["dir"], slurm_run["local"]
    assert slurm_run["rc"] == 0 and slurm_run["local_rc"] == 0
    for f in sorted((local / "results").rglob("*")):
        rel = f.relative_to(local)
        # not compared: checkpoints/ (resume state) and the inputs.json stamps of gathered folders (file times)
        skip = {"logs", "benchmarks", "checkpoints"} & set(rel.parts) or rel.name == "inputs.json"
        if f.suffix in (".csv", ".json", ".md", ".tsv") and not skip:
            assert (d / rel).read_bytes() == f.read_bytes(), f"{rel} differs between the local and the SLURM run"
    assert (d / "results/tables/table7.csv").read_bytes() == (local / "results/tables/table7.csv").read_bytes()


def running_train_job(deadline: float, proc: subprocess.Popen) -> str:
    while time.monotonic() < deadline and proc.poll() is None:
        for line in sh("squeue", "-h", "-t", "RUNNING", "-o", "%i|%k").splitlines():
            jobid, comment = line.split("|", 1)
            if comment.startswith("rule_train_"):
                return jobid
        time.sleep(0.5)
    raise AssertionError("no training job was seen running")


def job_environments(jobid: str) -> dict[int, tuple[str, str | None]]:
    """{pid: (command line, CUDA_VISIBLE_DEVICES)} of the job's processes on this node (we are root)."""
    found = {}
    for line in sh("scontrol", "listpids", jobid).splitlines()[1:]:
        pid = int(line.split()[0])
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            env = dict(e.split("=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in e)
        except OSError:
            continue
        found[pid] = (cmd, env.get("CUDA_VISIBLE_DEVICES"))
    return found


def test_cancelled_training_job_is_retried_and_resumes(slurm_run, tmp_path):
    """scancel a running training job: Snakemake resubmits it and training resumes from last.ckpt."""
    assert slurm_run["rc"] == 0
    d = tmp_path / "work"
    # the first run's data (downloads, gene table, shards), with their times; no runs, no tables
    shutil.copytree(slurm_run["dir"], d, ignore=lambda p, names: [
        n for n in names if (Path(p) == slurm_run["dir"] and n in (".snakemake", "snakemake.out"))
        or (Path(p) == slurm_run["dir"] / "results" and n in ("runs", "tables", "logs"))])
    # a run of its own (seed 22), long enough to catch while it trains; its model is the target
    cfg = write_config(tmp_path / "long.yaml", training={"max_steps": 240, "checkpoint_every": 40})
    run_dir = d / "results/runs/synthA/L200_h3k27ac+dnase+hic_K0/seed22"
    target = str((run_dir / "model.pt").relative_to(d))
    last = run_dir / "checkpoints/last.ckpt"

    with open(d / "snakemake.out", "w") as so:
        proc = subprocess.Popen(slurm_cmd(target, slurm_run["profile"], [cfg], timeout=400), cwd=d,
                                stdout=so, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            jobid = running_train_job(deadline, proc)
            while not last.exists():
                assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint was written"
                time.sleep(0.2)
            envs = job_environments(jobid)
            subprocess.run(["scancel", jobid], check=True)
            rc = proc.wait(timeout=420)
        finally:
            if proc.poll() is None:
                proc.send_signal(2)
                proc.wait(timeout=60)
    out = (d / "snakemake.out").read_text()
    assert rc == 0, out[-6000:]

    # the training process itself saw its GPU
    train_procs = [cvd for cmd, cvd in envs.values() if "train.py" in cmd]
    assert train_procs and all(cvd is not None and re.fullmatch(r"\d", cvd) for cvd in train_procs), envs

    # SLURM cancelled the job, Snakemake reported it and submitted the job again
    assert f"SLURM-job '{jobid}' failed, SLURM status is: 'CANCELLED'" in out
    train_jobs = [j for rule, j, _ in submissions(out) if rule == "train"]
    assert train_jobs[0] == jobid and len(train_jobs) == 2, train_jobs
    assert "--attempt 2" in sbatch_calls(out, "train")[1]

    # the retry resumed from the checkpoint and finished the run
    log = (d / "results/logs/train/synthA/L200_h3k27ac+dnase+hic_K0/seed22.log").read_text()
    assert f"resuming from {last.relative_to(d)}" in log, log[-3000:]
    resumed_at = int(re.search(r"training from step (\d+) to 240", log)[1])
    assert 0 < resumed_at < 240  # not from scratch (SIGTERM saves a step that need not be a multiple of 40)
    history = (run_dir / "history.csv").read_text().splitlines()
    assert [row.split(",")[:2] for row in history[-2:]] == [["240", "train"], ["240", "val"]], history[-3:]
    assert (run_dir / "model.pt").exists()
