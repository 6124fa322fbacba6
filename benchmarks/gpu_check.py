"""One command for a machine with CUDA: fused kernels against our PyTorch path, bf16 training steps, and a
released checkpoint scored on the demo.

    PYTHONPATH=src python benchmarks/gpu_check.py            # CUDA if present (under 8 minutes on an H200)
    PYTHONPATH=src python benchmarks/gpu_check.py --device cpu  # the CPU parts only, tiny models (about a minute)

Checks, each one row of the ONE summary table printed at the end (progress goes to stderr):

1. kernels vs torch: the same module and the same weights run twice, once through mamba_ssm's
   ``selective_scan_fn`` and causal-conv1d's ``causal_conv1d_fn`` (what prism.model.mamba uses when they
   import) and once through our PyTorch path (``PRISM_FORCE_TORCH_SCAN=1``): a Mamba mixer and the whole
   Caduceus backbone (d_model 128, 4 layers), L = 2000, batch 2, in float32 and under bf16 autocast
   (fp32 weights, as training runs). Compared: the output, the input's gradient and every parameter's
   gradient of ``sum(out * R)`` for a fixed random R. The error of a tensor is
   ``max|kernel - torch| / max|torch|``; the row shows the worst tensor. Tolerance: 2e-3 in float32
   (mamba_ssm's own kernel-vs-reference tests allow rtol 6e-4 / atol 2e-3 per op in float32, and 4 layers
   over 2000 steps accumulate more round-off, in a different order); 5e-2 under bf16 (unit round-off
   2^-8 = 3.9e-3: the two paths round the conv output, dt and the projections to bf16 at different
   points; mamba_ssm's tests allow rtol 3e-2 / atol 5e-2 for bf16).
2. bf16 training step: seconds per step (median after warm-up) and peak GPU memory of one AdamW step with
   gradient clipping under bf16 autocast, for every architecture of config/config.yaml (built through the
   model registry, prism.archs, at the paper's sizes; the demo's sizes from config/demo.yaml for the tiny
   CPU run) at 2 kb and 200 kb, batch 8, with the kernels (and our PyTorch path at 2 kb only: at 200 kb its
   per-step Python loop takes minutes). Out of memory is reported as such (status OOM, not a failure), with
   the batch halved until a step fits.

3. released checkpoint on the demo: the demo's "released" Prism checkpoint (the authors' Lightning layout,
   random weights) imported and scored on the demo's test split by the workflow itself (``snakemake`` on
   config/demo.yaml, target: that run's evaluation.json; ``--demo-dir`` reuses a demo already built), then
   scored again here on each path: our PyTorch path in float32 on CPU (the reference), and on CUDA the
   kernels and our PyTorch path under bf16 autocast, as the evaluate rule runs there. The row gives the test
   MSE and Pearson and the worst prediction error ``max|p - p_ref| / max|p_ref|`` against the reference,
   with the tolerances of check 1 (float32 on CPU, where the workflow's own numbers must agree too; bf16
   on CUDA).

Without CUDA it says which parts it skips, then runs on CPU what exercises the same code on tiny models:
our chunked scan against the plain step-by-step reference, and a bf16-autocast training step.
Exit status 1 if any comparison fails or errors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import yaml

from prism.archs import build_model
from prism.data import Batch, CellData
from prism.evaluate import load_model, predict
from prism.metrics import regression_metrics
from prism.model import CaduceusBackbone, Mamba, PrismModel
from prism.plan import Plan
from prism.model import mamba as mamba_module
from prism.model.mamba import fast_kernels

TOLERANCE = {"float32": 2e-3, "bfloat16": 5e-2}
CPU_TOLERANCE = 1e-5  # our chunked scan vs the plain loop: same arithmetic, float32, a different order
TIME_BUDGET_S = 7 * 60  # later cases are skipped past this, so the whole check stays under 8 minutes


@dataclass
class Arch:
    """One architecture of the step-time check: ``build(tiny, length)`` returns a model on CPU in float32,
    following the model contract (``forward_batch(batch, mode)``, ``loss(out, target)``, ``param_groups(wd)``)."""

    name: str
    build: Callable[[bool, int], torch.nn.Module]  # (tiny, input length)
    lengths: tuple[int, ...] = (2000, 200_000)
    batch: int = 8
    n_signals: int = 3
    extra: Callable[[int, int, bool], dict] = field(default=lambda batch, length, tiny: {})  # Batch.extra


ROOT = Path(__file__).resolve().parents[1]
#: architecture -> the setting that makes it a baseline of Table 1 (signals, K) at the paper's lengths
SETTINGS = {"caduceus": {"signals": [], "K": 0}, "mamba": {"signals": [], "K": 0}}
#: architectures whose weights come from elsewhere (released, pre-trained): their kind is timed once already
SKIP = ("prism-released", "caduceus-ph", "prism-ph", "enformer-pretrained")


def _extras(kind, hps: dict) -> Callable[[int, int, bool], dict]:
    def make(batch: int, length: int, tiny: bool) -> dict:
        hp = hps[tiny]
        g = torch.Generator().manual_seed(1)
        out = {}
        if "blacklist" in kind.inputs_for(hp):
            out["blacklist"] = torch.rand(batch, length, generator=g) < 0.01
        if "peaks" in kind.inputs_for(hp):
            out["peaks"] = (torch.rand(batch, length, generator=g) < 0.1).float()
        if "elements" in kind.inputs:
            E, L = 1 + hp["n_elements"], hp["element_length"]
            codes = torch.randint(0, 4, (batch, E, L), generator=g)
            out.update(elements_seq=torch.nn.functional.one_hot(codes, 4).float(),
                       elements_feat=torch.rand(batch, E, 3, generator=g), elements_mask=torch.ones(batch, E, dtype=torch.bool))
        return out
    return make


def _architectures() -> list[Arch]:
    """Every architecture of the paper's config (and the demo's, for tiny CPU runs), through the registry."""
    plans = {tiny: Plan(yaml.safe_load((ROOT / f"config/{name}").read_text()), workdir=str(ROOT))
             for tiny, name in ((False, "config.yaml"), (True, "demo.yaml"))}
    out = []
    for name, arch in plans[False].architectures.items():
        if name in SKIP or name not in plans[True].architectures:
            continue
        kind = plans[False].kind_of(name)

        def build(tiny: bool, length: int, name=name):
            plan = plans[tiny]  # the input length is part of a run's settings (a learned positional embedding)
            spec = plan.model({"arch": name, "length": length, **SETTINGS.get(name, {})}, f"gpu_check {name}")
            return build_model(plan.architectures[name], spec, 9)

        lengths = (2000,) if kind.name == "epinformer" else (2000, 200_000)
        n_sig = 3 if kind.takes_signals and name not in SETTINGS else 0
        out.append(Arch(name, build, lengths=lengths, n_signals=n_sig,
                        batch=16 if kind.name == "epinformer" else 4 if kind.name == "enformer" else 8,
                        extra=_extras(kind, {t: p.architectures[name]["model"] for t, p in plans.items()})))
    return out


ARCHITECTURES = _architectures()


# ------------------------------------------------------------------------------------------ helpers


@contextlib.contextmanager
def torch_path(force: bool):
    """PRISM_FORCE_TORCH_SCAN=1 while inside (prism.model.mamba reads it at every forward)."""
    old = os.environ.get("PRISM_FORCE_TORCH_SCAN")
    os.environ["PRISM_FORCE_TORCH_SCAN"] = "1" if force else "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PRISM_FORCE_TORCH_SCAN", None)
        else:
            os.environ["PRISM_FORCE_TORCH_SCAN"] = old


def autocast(device: str, dtype: str):
    if dtype == "bfloat16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def output_and_grads(module: torch.nn.Module, x: torch.Tensor, R: torch.Tensor, device: str, dtype: str) -> dict:
    """{'out', 'grad x', 'grad <param>'...} of sum(module(x) * R), all as float32 tensors."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    with autocast(device, dtype):
        out = module(x)
    (out.float() * R).sum().backward()
    res = {"out": out.detach().float(), "grad x": x.grad.detach().float()}
    for name, p in module.named_parameters():
        res[f"grad {name}"] = p.grad.detach().float()
    return res


def worst_error(a: dict, b: dict) -> tuple[float, str, float]:
    """(worst relative error over all tensors, its name, the output's own error); error = max|a-b| / max|b|."""
    errs = {k: float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-30)) for k in b}
    name = max(errs, key=errs.get)
    return errs[name], name, errs["out"]


def peak_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS, KiB on Linux


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_batch(arch: Arch, batch: int, length: int, device: str, tiny: bool = False) -> Batch:
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 5, (batch, length), generator=g)
    seq = torch.nn.functional.one_hot(codes, 5)[..., :4].float()  # (B, L, 4), N = zeros
    signals = torch.rand(batch, arch.n_signals, length, generator=g)
    extra = {k: v.to(device) for k, v in arch.extra(batch, length, tiny).items()}
    return Batch(seq, signals, torch.randn(batch, 9, generator=g), torch.rand(batch, generator=g) * 3,
                 torch.arange(batch), extra=extra).to(device)


def step_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    if hasattr(model, "forward_batch"):
        out = model.forward_batch(batch, mode="train")
    else:  # PrismModel before the registry: the same inputs by position
        out = model(batch.seq, batch.signals, batch.features)
    return model.loss(out, batch.target)["loss"]


def time_training_step(model: torch.nn.Module, batch: Batch, device: str, warmup: int, steps: int) -> tuple[float, float]:
    """Median seconds per bf16 AdamW step (clip 1.0) after ``warmup`` steps, and peak memory in MiB."""
    opt = torch.optim.AdamW(model.param_groups(1e-6), lr=5e-4, betas=(0.9, 0.95))
    model.train()
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        with autocast(device, "bfloat16"):
            loss = step_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    if not math.isfinite(float(loss.detach())):
        raise RuntimeError(f"loss is {float(loss.detach())}")
    return sorted(times)[len(times) // 2], peak_mib(device)


def one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:160]


# ------------------------------------------------------------------------------------------- checks


class Report:
    def __init__(self, deadline: float):
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.deadline = deadline

    def add(self, check: str, case: str, result: str, limit: str, status: str) -> None:
        # a cell's own "|" (an exception's text) would split it in the Markdown table
        self.rows.append(tuple(c.replace("|", "/") for c in (check, case, result, limit, status)))
        print(f"[gpu_check] {status:5} {check} | {case} | {result}", file=sys.stderr, flush=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    def failed(self) -> bool:
        return any(r[4] in ("FAIL", "ERROR") for r in self.rows)

    def table(self) -> str:
        head = ("check", "case", "result", "limit", "status")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(5)]
        line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([line(head), sep, *(line(r) for r in self.rows)])


def compare_kernels(report: Report, length: int = 2000, batch: int = 2, d_model: int = 128, n_layer: int = 4) -> None:
    """Fused kernels vs our PyTorch path on the same weights (CUDA)."""
    for what, make in (("Mamba mixer", lambda: Mamba(d_model)),
                       ("Caduceus backbone", lambda: CaduceusBackbone(d_model, n_layer))):
        for dtype in ("float32", "bfloat16"):
            case = f"{what} d{d_model}{f' x{n_layer}' if 'backbone' in what else ''} L{length} B{batch} {dtype}"
            tol = TOLERANCE[dtype]
            if report.out_of_time():
                report.add("kernels vs torch", case, "time budget spent", f"{tol:g}", "SKIP")
                continue
            try:
                torch.manual_seed(0)
                module = make().cuda()
                x = torch.randn(batch, length, d_model, device="cuda")
                R = torch.randn(batch, length, d_model, device="cuda")
                with torch_path(False):
                    fused = output_and_grads(module, x, R, "cuda", dtype)
                with torch_path(True):
                    ours = output_and_grads(module, x, R, "cuda", dtype)
                err, name, out_err = worst_error(fused, ours)
                status = "PASS" if err <= tol else "FAIL"
                report.add("kernels vs torch", case, f"out {out_err:.1e}, worst {err:.1e} ({name})", f"{tol:g}", status)
            except Exception as exc:  # a kernel that refuses its inputs is a finding, not a crash
                report.add("kernels vs torch", case, one_line(exc), f"{tol:g}", "ERROR")
            finally:
                torch.cuda.empty_cache()


def compare_scan_cpu(report: Report, length: int = 64, d_model: int = 16) -> None:
    """CPU stand-in for check 1: our chunked scan against the plain reference loop, tiny mixer, float32."""
    from prism.model.scan import selective_scan, selective_scan_reference

    torch.manual_seed(0)
    module = Mamba(d_model)
    x = torch.randn(2, length, d_model)
    R = torch.randn(2, length, d_model)
    ours = output_and_grads(module, x, R, "cpu", "float32")
    mamba_module.selective_scan = selective_scan_reference
    try:
        ref = output_and_grads(module, x, R, "cpu", "float32")
    finally:
        mamba_module.selective_scan = selective_scan
    err, name, out_err = worst_error(ours, ref)
    report.add("chunked scan vs plain loop", f"Mamba mixer d{d_model} L{length} B2 float32 (CPU)",
               f"out {out_err:.1e}, worst {err:.1e} ({name})", f"{CPU_TOLERANCE:g}",
               "PASS" if err <= CPU_TOLERANCE else "FAIL")


def step_times(report: Report, device: str, kernels: bool, tiny: bool) -> None:
    for arch in ARCHITECTURES:
        lengths = (128,) if tiny else arch.lengths
        batch = 2 if tiny else arch.batch
        for length in lengths:
            paths = ["torch"] if device == "cpu" else (["kernels"] if kernels else []) + (["torch"] if length <= 2000 else [])
            if device == "cuda" and not kernels and length > 2000:
                report.add("bf16 train step", f"{arch.name} L{length} B{batch}", "kernels unavailable; the torch "
                           "path's per-step loop takes minutes here", "-", "SKIP")
            for path in paths:
                case = f"{arch.name} L{length} B{batch} {path}" + (" demo size (CPU)" if tiny else "")
                if report.out_of_time():
                    report.add("bf16 train step", case, "time budget spent", "-", "SKIP")
                    continue
                warmup, steps = (1, 1) if tiny else (1, 2) if (path == "torch" or length > 2000) else (3, 10)
                report.add("bf16 train step", case, *run_step_case(arch, tiny, device, path, batch, length, warmup, steps))


def run_step_case(arch: Arch, tiny: bool, device: str, path: str, batch: int, length: int, warmup: int,
                  steps: int) -> tuple[str, str, str]:
    """(result, limit, status) of one step-time case; out of memory halves the batch until one fits."""
    tried = []
    while True:
        model = batch_data = None
        try:
            torch.manual_seed(0)
            model = arch.build(tiny, length).to(device)
            batch_data = make_batch(arch, batch, length, device, tiny)
            with torch_path(path == "torch"):
                sec, mib = time_training_step(model, batch_data, device, warmup, steps)
            mem = f"peak {mib / 1024:.2f} GiB" if device == "cuda" else f"peak RSS {mib:.0f} MiB (process)"
            if tried:
                return f"out of GPU memory at B{', B'.join(tried)}; at B{batch}: {sec:.3f} s/step, {mem}", "-", "OOM"
            return f"{sec:.3f} s/step, {mem}", "-", "OK"
        except torch.cuda.OutOfMemoryError:
            tried.append(str(batch))
            if batch == 1:
                return f"out of GPU memory at B{', B'.join(tried)}", "-", "OOM"
            batch //= 2
        except Exception as exc:
            return one_line(exc), "-", "ERROR"
        finally:
            model = batch_data = None
            if device == "cuda":
                torch.cuda.empty_cache()


def released_on_demo(report: Report, device: str, kernels: bool, demo_dir: Path | None, cores: int) -> None:
    """Check 3: the demo's released Prism checkpoint, imported by the workflow, scored on each path."""
    check = "released checkpoint"
    plan = Plan(yaml.safe_load((ROOT / "config/demo.yaml").read_text()), workdir=str(demo_dir or ROOT))
    run = next(r for r in plan.runs("table1_released") if plan.architectures[r.model.arch].get("released"))
    cell, variant = plan.tests[run.path][0]
    with contextlib.ExitStack() as stack:
        if demo_dir is None:
            demo_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu_check_demo_")))
        metrics_json = demo_dir / run.path / "evaluation.json"
        if not metrics_json.exists():
            cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(demo_dir),
                   "--configfile", str(ROOT / "config/demo.yaml"), "--cores", str(cores), f"{run.path}/evaluation.json"]
            print(f"[gpu_check] building the demo's released run: {' '.join(cmd)}", file=sys.stderr, flush=True)
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(60.0, report.left() - 60))
            except subprocess.TimeoutExpired:
                report.add(check, f"{run.path} ({cell})", "the demo build ran out of time", "-", "SKIP")
                return
            if p.returncode != 0:
                tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
                report.add(check, f"{run.path} ({cell})", f"the demo build failed: {tail[:120]}", "-", "ERROR")
                return
        evaluation = json.loads(metrics_json.read_text())
        theirs, their_device = evaluation["results"][f"{cell}/{variant}"], evaluation.get("device", "cpu")
        model, meta = load_model(demo_dir / run.path / "model.pt")
        with contextlib.chdir(demo_dir):  # the plan's data paths are relative to the workflow's folder
            spec = meta["spec_obj"]
            data = CellData.from_inputs(cell, plan.data_inputs(cell, spec), spec, meta["arch"])
        rows = data.indices("test")
        paths = [("cpu", "torch")] + ([("cuda", "kernels")] if device == "cuda" and kernels else []) \
            + ([("cuda", "torch")] if device == "cuda" else [])
        ref = None
        for dev, path in paths:
            with torch_path(path == "torch"):
                pred, _, _ = predict(model, data, rows, variant=variant, device=dev)
            m = regression_metrics(data.target[rows], pred)
            case = f"demo Prism (released layout) {cell} test n={m['n']}, {path} on {dev}" \
                   + (" float32" if dev == "cpu" else " bf16")
            if ref is None:
                ref = pred
                err = max(abs(m["mse"] - theirs["mse"]), abs(m["pearson"] - theirs["pearson"]))
                limit = TOLERANCE["float32"] if their_device == "cpu" else TOLERANCE["bfloat16"]
                vs = (f"workflow's ({their_device}): MSE {theirs['mse']:.4f}, Pearson {theirs['pearson']:.4f}; "
                      f"largest difference {err:.1e}")
            else:
                err = float(abs(pred - ref).max() / max(abs(ref).max(), 1e-12))
                limit = TOLERANCE["bfloat16"]
                vs = f"vs CPU float32: worst {err:.1e}"
            report.add(check, case, f"MSE {m['mse']:.4f}, Pearson {m['pearson']:.4f}; {vs}", f"{limit:g}",
                       "PASS" if err <= limit else "FAIL")
        model.cpu()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--demo-dir", type=Path, help="a demo workflow folder (config/demo.yaml) to reuse for "
                        "check 3; by default the needed jobs run in a temporary folder")
    parser.add_argument("--cores", type=int, default=min(8, os.cpu_count() or 1), help="for the demo build")
    args = parser.parse_args(argv)
    device = "cuda" if (args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())) else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch.cuda.is_available() is False")
    report = Report(time.monotonic() + TIME_BUDGET_S)
    kernels = fast_kernels() is not None

    if device == "cuda":
        versions = []
        for mod in ("mamba_ssm", "causal_conv1d"):
            try:
                versions.append(f"{mod} {__import__(mod).__version__}")
            except Exception as exc:
                versions.append(f"{mod} missing ({one_line(exc)})")
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
              + ", ".join(versions))
        if kernels:
            compare_kernels(report)
        else:
            report.add("kernels vs torch", "Mamba mixer and Caduceus backbone, float32 and bf16",
                       "mamba_ssm / causal_conv1d do not import: nothing to compare", "-", "SKIP")
        released_on_demo(report, "cuda", kernels, args.demo_dir, args.cores)
        step_times(report, "cuda", kernels, tiny=False)
    else:
        print(f"device: CPU ({torch.get_num_threads()} threads), torch {torch.__version__}. No CUDA: SKIPPING the "
              f"kernel comparisons (mamba_ssm/causal-conv1d vs our PyTorch path) and the full-size bf16 step times "
              f"at 2 kb and 200 kb; running the CPU parts on tiny models.")
        for what in ("Mamba mixer d128 L2000", "Caduceus backbone d128 x4 L2000"):
            report.add("kernels vs torch", f"{what} float32 + bf16", "needs CUDA", "-", "SKIP")
        for arch in ARCHITECTURES:
            report.add("bf16 train step", f"{arch.name} " + ", ".join(f"L{n}" for n in arch.lengths)
                       + f" B{arch.batch}", "needs CUDA", "-", "SKIP")
        compare_scan_cpu(report)
        released_on_demo(report, "cpu", False, args.demo_dir, args.cores)
        step_times(report, "cpu", kernels=False, tiny=True)

    print(report.table())
    return 1 if report.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
