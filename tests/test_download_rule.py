"""Rule download through real Snakemake runs: a checksum mismatch fails once with one line, and a file that
differs from resources/checksums.lock.json is refused with what changed and accepted with the documented
command."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
TARGET = "resources/assets/genome/genome.fa.gz"


def config(tmp_path: Path, **genome) -> Path:
    """A config whose genome is a local file; nothing else is downloaded for TARGET."""
    src = tmp_path / "mirror"
    src.mkdir(exist_ok=True)
    for name in ("genome.fa.gz", "split.csv", "halflife.csv"):
        if not (src / name).exists():
            (src / name).write_bytes(f"the first {name}\n".encode())
    cfg = {"assets": {"genome": {"url": (src / "genome.fa.gz").as_uri(), **genome},
                      "split": {"url": (src / "split.csv").as_uri()}, "halflife": {"url": (src / "halflife.csv").as_uri()}},
           "chromosomes": ["chr1"],
           "cell_lines": {"K562": {"signals": {m: {"url": (src / f"{m}.bigWig").as_uri(), "kind": "bigwig"}
                                               for m in ("h3k27ac", "dnase")},
                                   "expression": {"source": "csv_column", "asset": "split", "column": "K562"},
                                   "promoter_activity": {"source": "bigwig"}}},
           "architectures": {"prism": {"kind": "prism", "model": {k: 4 for k in (
               "d_model", "n_layer", "d_state", "d_conv", "expand", "confounder_width", "center_len")}}},
           "run_defaults": {"signals": ["h3k27ac", "dnase"]}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def download(workdir: Path, cfg: Path) -> subprocess.CompletedProcess:
    # --retries 2 as in profiles/slurm: the rule's own `retries: 0` must win
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
                           "--configfile", str(cfg), "--cores", "1", "--retries", "2", TARGET], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)


def test_checksum_mismatch_fails_once_with_one_line(tmp_path):
    cfg = config(tmp_path, md5="0" * 32)
    p = download(tmp_path / "w", cfg)
    out = p.stdout + p.stderr
    assert p.returncode == 1
    assert "Traceback" not in out and "Trying to restart" not in out
    got = hashlib.md5(b"the first genome.fa.gz\n").hexdigest()
    lines = [line for line in out.splitlines() if "AssetError" in line]
    assert lines == [f"AssetError: {TARGET}: verification failed: md5 {got} != expected {'0' * 32} (pinned); "
                     f".part removed ({(tmp_path / 'mirror/genome.fa.gz').as_uri()})"], out[-3000:]
    assert not (tmp_path / "w" / TARGET).exists()


def test_file_that_differs_from_the_lock_is_refused_then_accepted(tmp_path):
    cfg = config(tmp_path)
    work = tmp_path / "w"
    assert download(work, cfg).returncode == 0
    lock = work / "resources/checksums.lock.json"
    old = json.loads(lock.read_text())["assets/genome/genome.fa.gz"]

    (tmp_path / "mirror/genome.fa.gz").write_bytes(b"the fixed genome.fa.gz\n")  # the source published a new file
    (work / TARGET).unlink()
    p = download(work, cfg)
    assert p.returncode == 1
    new_md5 = hashlib.md5(b"the fixed genome.fa.gz\n").hexdigest()
    url = (tmp_path / "mirror/genome.fa.gz").as_uri()
    lines = [line for line in (p.stdout + p.stderr).splitlines() if "AssetError" in line]
    assert lines == [f"AssetError: {TARGET}: differs from what lock file resources/checksums.lock.json pinned: then md5 "
                     f"{old['md5']}, 23 bytes, {url}; now downloaded md5 {new_md5}, 23 bytes, {url} (.part removed). "
                     f"If the new file is right, accept it with: python -m prism.download accept {work / TARGET}"]

    accept = lines[0].split("accept it with: ")[1].split()
    p = subprocess.run([sys.executable, *accept[1:]], cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"removed assets/genome/genome.fa.gz from {lock}: md5 {old['md5']}, 23 bytes, {url}")
    assert download(work, cfg).returncode == 0
    assert json.loads(lock.read_text())["assets/genome/genome.fa.gz"]["md5"] == new_md5
