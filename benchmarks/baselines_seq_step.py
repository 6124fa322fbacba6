"""Seconds per training step of the sequence-only baselines (HyenaDNA, Enformer) at demo scale on the CPU.

A step is forward + smooth-L1 loss + backward + AdamW step on a random one-hot batch. Prints the median wall
seconds and process CPU seconds of ``--steps`` steps after one warm-up, for each intra-op thread count asked for
(on a machine shared with other jobs, CPU seconds at one thread are the steadier figure).

    python benchmarks/baselines_seq_step.py                     # B=8, L=20,000, tiny dims, threads 1 and all
    python benchmarks/baselines_seq_step.py --length 2000 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from prism.data import Batch
from prism.model import enformer, hyena
from prism.model.prism import count_parameters
from prism.runs import ModelSpec

TINY = {  # name: (module, hp); what is not named is at Seq2Exp's settings
    "hyena d16 x1": (hyena, dict(hyena.DEFAULT_HP, d_model=16, n_layer=1, d_inner=64, filter_order=16)),
    "hyena d32 x2": (hyena, dict(hyena.DEFAULT_HP, d_model=32, n_layer=2, d_inner=128, filter_order=32)),
    # dim / heads = 12, a multiple of 6; all bins kept (157 at 20 kb)
    "enformer d24 x1": (enformer, dict(enformer.DEFAULT_HP, dim=24, depth=1, heads=2, attn_dim_key=8,
                                       dim_divisible_by=4, target_length=-1, head_dim=24)),
}


def seconds_per_step(name: str, batch: int, length: int, steps: int) -> tuple[float, float, int]:
    """-> (median wall s, median process CPU s, trainable parameters) of one training step."""
    torch.manual_seed(0)
    module, hp = TINY[name]
    model = module.build(hp, ModelSpec(length=length, signals=(), K=0), 9).train()
    opt = torch.optim.AdamW(model.param_groups(1e-6), lr=1e-3, betas=(0.9, 0.95))
    seq = F.one_hot(torch.randint(0, 4, (batch, length)), 4).float()
    b = Batch(seq=seq, signals=torch.zeros(batch, 0, length), features=torch.randn(batch, 9),
              target=torch.rand(batch) * 3, index=torch.arange(batch))
    wall, cpu = [], []
    for _ in range(steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = model.loss(model.forward_batch(b, mode="train"), b.target)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall[1:]), statistics.median(cpu[1:]), count_parameters(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=20_000)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for threads in dict.fromkeys(args.threads):
        torch.set_num_threads(threads)
        for name in TINY:
            wall, cpu, n = seconds_per_step(name, args.batch, args.length, args.steps)
            print(f"{name:16s} B={args.batch} L={args.length} threads={threads} params={n:,}: "
                  f"{wall:.3f} s/step wall, {cpu:.3f} CPU s/step")


if __name__ == "__main__":
    main()
