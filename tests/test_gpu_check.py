"""benchmarks/gpu_check.py runs on a machine without CUDA: it says what it skips and runs its CPU parts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_and_says_what_it_skips(capsys, monkeypatch, demo_dir):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # its dataclasses look their module up
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--device", "cpu", "--demo-dir", str(demo_dir)]) == 0  # the suite's demo, built once
    out = capsys.readouterr().out
    assert "No CUDA: SKIPPING the kernel comparisons" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| check")]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    status = {(c[0], c[1]): c[4] for c in cells}
    assert status[("kernels vs torch", "Mamba mixer d128 L2000 float32 + bf16")] == "SKIP"
    assert status[("bf16 train step", "prism L2000, L200000 B8")] == "SKIP"
    assert status[("chunked scan vs plain loop", "Mamba mixer d16 L64 B2 float32 (CPU)")] == "PASS"
    tiny = {case: st for (check, case), st in status.items() if check == "bf16 train step" and "(CPU)" in case}
    # every trained architecture of the registry takes a training step at the demo's size
    for name in ("prism", "caduceus-signals", "mamba", "seq2exp-soft", "seq2exp-hard", "macs3", "hyenadna",
                 "epinformer", "enformer"):
        assert tiny[f"{name} L128 B2 torch demo size (CPU)"] == "OK", name
    assert set(tiny.values()) == {"OK"}, tiny
    # the demo's released Prism checkpoint, as the workflow imported and scored it, scored again here
    released = [c for (check, c), st in status.items() if check == "released checkpoint" and st == "PASS"]
    assert len(released) == 1 and released[0].startswith("demo Prism (released layout) synthA test n="), status
    assert released[0].endswith("torch on cpu float32")
    assert sum(1 for line in out.splitlines() if line.startswith("| check")) == 1  # one summary table
