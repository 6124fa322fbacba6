"""CPU seconds per training step of Seq2Exp (soft, hard) and its MACS3 variant (a script, not a test).

A step is forward_batch(mode="train") + loss + backward + AdamW step, on random one-hot sequence,
signals on the raw scale, a blacklisted stretch and 30 % MACS3 peaks. Prints, per setting, the median
over --steps steps after one warm-up of the wall seconds and of the process CPU seconds (all threads;
on a shared machine the CPU figure is the steadier one).

    python benchmarks/seq2exp_step_benchmark.py                  # d_model 16, n_layer 2, L 20,000, batch 8
    python benchmarks/seq2exp_step_benchmark.py --d-model 128 --n-layer 4 --length 2000 --batch 2 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from prism.data import Batch
from prism.model.prism import count_parameters
from prism.model.seq2exp import build
from prism.runs import ModelSpec

# Seq2Exp.sh's settings (gene_express_bimamba_MI_RNP.yaml plus the script's overrides)
SOFT = dict(
    mask="learned", kl_loss_weight=0.01, prior_scale_factor=10.0, marginal_mean=0.1, marginal_scale=10.0,
    beta_min=1.0, prior_beta={"h3k27ac": 1.5, "dnase": 0.2, "hic": 1.0},
    prior_weight={"h3k27ac": 2.0, "dnase": 2.0, "hic": 1.0}, z_scale=1.0, decouple_x=True, sample_threshold=0.5,
    post_hard_dist=False, test_hard=False, enc_prd_ps=False, pos_enc=False, center_len=2000, init_n_layer=64,
)
SETTINGS = {
    "soft": SOFT,
    "hard": {**SOFT, "prior_scale_factor": 1.0, "beta_min": 0.0, "marginal_mean": 0.45, "marginal_scale": 0.1,
             "test_hard": True, "post_hard_dist": True, "enc_prd_ps": True, "pos_enc": True},
    "macs3": {**SOFT, "mask": "macs3"},
}


def make_batch(batch: int, length: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    seq = F.one_hot(torch.randint(0, 4, (batch, length), generator=g), 4).float()  # (B, L, 4)
    signals = torch.rand(batch, 3, length, generator=g) * 4  # (B, 3, L)
    blacklist = torch.zeros(batch, length, dtype=torch.bool)
    blacklist[:, : length // 20] = True
    peaks = (torch.rand(batch, length, generator=g) < 0.3).float()
    return Batch(seq, signals, torch.randn(batch, 9, generator=g), torch.rand(batch, generator=g) * 4,
                 torch.arange(batch), extra={"blacklist": blacklist, "peaks": peaks})


def time_setting(name: str, args) -> tuple[float, float, int]:
    torch.manual_seed(0)
    hp = {**SETTINGS[name], "d_model": args.d_model, "n_layer": args.n_layer, "gen_n_layer": args.n_layer,
          "d_state": 16, "d_conv": 4, "expand": 2}
    model = build(hp, ModelSpec(length=args.length), 9)
    opt = torch.optim.AdamW(model.param_groups(1e-6), lr=5e-4, betas=(0.9, 0.95))
    batch = make_batch(args.batch, args.length)
    wall, cpu = [], []
    for step in range(args.steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        losses = model.loss(model.forward_batch(batch, "train"), batch.target)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step:  # the first step is a warm-up
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), count_parameters(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=16)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--length", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"d_model {args.d_model}, n_layer {args.n_layer}, L {args.length}, batch {args.batch}, "
          f"torch threads {torch.get_num_threads()}", flush=True)
    for name in args.settings:
        wall, cpu, n_params = time_setting(name, args)
        print(f"{name:6s} {wall:8.2f} s/step wall, {cpu:8.2f} CPU s/step  ({n_params:,} parameters)", flush=True)


if __name__ == "__main__":
    main()
