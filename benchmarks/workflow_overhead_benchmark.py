"""What a workflow job spends before and after its work, and what a dry run of the paper costs.

Each figure is the median of ``--repeats`` fresh processes, beside the obvious alternative measured in
the same run:

- start-up of a training job (``import prism.train``), as shipped against Lightning imported plainly
  (torchmetrics then imports transformers, scipy.signal, matplotlib and PIL; prism._lightning);
- interpreter exit after those imports, with the job's objects frozen (``gc.freeze``, prism.logs.job_log)
  against a plain exit (the collector walks every object once more);
- ``snakemake -n paper`` on config/config.yaml against ``snakemake -n`` of a one-rule Snakefile: the part of
  the dry run that is Snakemake's own start-up, whatever the workflow.

    python benchmarks/workflow_overhead_benchmark.py               # 5 repeats each
    python benchmarks/workflow_overhead_benchmark.py --repeats 9 --skip-dry-run
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

#: (label, code run in a fresh interpreter; it prints the seconds it measured itself)
IMPORTS = [
    ("import prism.train (as shipped)",
     "import time; t = time.perf_counter(); import prism.train; print(time.perf_counter() - t)"),
    ("import prism.train (Lightning imported plainly)",
     "import time; t = time.perf_counter(); import lightning, lightning.pytorch; import prism.train; "
     "print(time.perf_counter() - t)"),
]
#: (label, code after which the interpreter exits; the wall time from its last line to the process's end)
EXITS = [
    ("exit after the imports, frozen (gc.freeze)", "import prism.train, gc; gc.freeze()"),
    ("exit after the imports, plain", "import prism.train"),
]


def _median_self_timed(code: str, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True)
        out.append(float(p.stdout.strip().splitlines()[-1]))
    return statistics.median(out)


def _median_exit(code: str, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        p = subprocess.Popen([sys.executable, "-c", f"{code}; import sys, time; print(time.time(), flush=True)"],
                             stdout=subprocess.PIPE, text=True, env=ENV)
        line = p.stdout.readline()
        p.wait()
        out.append(time.time() - float(line))
    return statistics.median(out)


def _median_wall(cmd: list[str], cwd: Path, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, capture_output=True, check=True)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-dry-run", action="store_true", help="only the job start-up and exit")
    args = parser.parse_args()

    print(f"median of {args.repeats} fresh processes each, seconds")
    (a, code_a), (b, code_b) = IMPORTS
    ta, tb = _median_self_timed(code_a, args.repeats), _median_self_timed(code_b, args.repeats)
    print(f"{a:<52} {ta:6.2f}\n{b:<52} {tb:6.2f}   plain / shipped {tb / ta:4.2f}x")
    (a, code_a), (b, code_b) = EXITS
    ta, tb = _median_exit(code_a, args.repeats), _median_exit(code_b, args.repeats)
    print(f"{a:<52} {ta:6.2f}\n{b:<52} {tb:6.2f}   plain / frozen {tb / max(ta, 1e-3):4.1f}x")
    if args.skip_dry_run:
        return
    snakemake = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules"]
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        (work / "Snakefile").write_text('rule one:\n    output: "one.txt"\n    shell: "touch {output}"\n')
        floor = _median_wall(snakemake, work, args.repeats)
        (work / "paper").mkdir()
        paper = _median_wall([*snakemake, "-s", str(ROOT / "Snakefile"), "--directory", str(work / "paper"),
                              "--configfile", str(ROOT / "config/config.yaml"), "--", "paper"], ROOT, args.repeats)
    print(f"{'snakemake -n (a one-rule Snakefile: its floor)':<52} {floor:6.2f}\n"
          f"{'snakemake -n paper (config/config.yaml)':<52} {paper:6.2f}   of it above the floor {paper - floor:5.2f}")


if __name__ == "__main__":
    main()
