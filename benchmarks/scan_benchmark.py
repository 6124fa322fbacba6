"""Training-step time and peak memory of the Caduceus backbone: our chunked scan vs a plain autograd loop.

Each (scan, L) case runs in its own subprocess so its peak RSS is its own. Prints seconds per
training step (forward + backward of the full backbone) and the peak-RSS increase over the
process's RSS after building the model and inputs, then the naive / ours ratios.

    python benchmarks/scan_benchmark.py                      # B=8, d_model=128, n_layer=4, L=200,500,2000
    python benchmarks/scan_benchmark.py --lengths 200 --batch 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_case(scan: str, length: int, batch: int, d_model: int, n_layer: int, steps: int) -> dict:
    """One case in this process: returns seconds per step (median of ``steps`` after one warm-up) and peak MiB."""
    import torch

    import prism.model.mamba as mamba_module
    from prism.model.caduceus import CaduceusBackbone
    from prism.model.scan import selective_scan_reference

    if scan == "naive":
        mamba_module.selective_scan = selective_scan_reference
    torch.manual_seed(0)
    model = CaduceusBackbone(d_model, n_layer)
    x = torch.randn(batch, length, d_model)
    base = _maxrss_mib()
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        model(x).square().mean().backward()
        model.zero_grad(set_to_none=True)
        if i > 0:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"scan": scan, "L": length, "s_per_step": times[len(times) // 2], "peak_mib": _maxrss_mib() - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[200, 500, 2000])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per case, after one warm-up")
    parser.add_argument("--scans", nargs="+", default=["ours", "naive"], choices=["ours", "naive"])
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args()

    if args.case:
        scan, length = args.case.split(":")
        print(json.dumps(run_case(scan, int(length), args.batch, args.d_model, args.n_layer, args.steps)))
        return

    print(f"backbone B={args.batch} d_model={args.d_model} n_layer={args.n_layer}; forward+backward per step")
    results = {}
    for length in args.lengths:
        for scan in args.scans:
            cmd = [sys.executable, __file__, "--case", f"{scan}:{length}", "--batch", str(args.batch),
                   "--d-model", str(args.d_model), "--n-layer", str(args.n_layer), "--steps", str(args.steps)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{scan:>5} L={length:>5}: failed (rc {proc.returncode}) {proc.stderr.strip()[-300:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results[(scan, length)] = r
            print(f"{scan:>5} L={length:>5}: {r['s_per_step']:8.3f} s/step  peak +{r['peak_mib']:8.0f} MiB", flush=True)
        if ("ours", length) in results and ("naive", length) in results:
            o, n = results[("ours", length)], results[("naive", length)]
            print(f"      L={length:>5}: naive/ours time x{n['s_per_step'] / o['s_per_step']:.2f}, "
                  f"memory x{n['peak_mib'] / max(o['peak_mib'], 1):.2f}", flush=True)


if __name__ == "__main__":
    main()
