"""Training of one run (PyTorch Lightning, as the paper), for every architecture of prism.archs.

``train_run`` fits a model on the train split, validates twice per epoch, keeps the checkpoint with
the lowest validation MSE and writes it as a portable ``model.pt`` (a plain state_dict plus the
architecture and settings needed to rebuild the model; see :mod:`prism.evaluate`). Rerunning it
resumes from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import signal
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.environments import LightningEnvironment

from .data import CellData, GeneIndex
from .evaluate import build_model, spec_of
from .metrics import regression_metrics
from .runs import Run


def lr_at(step: int, training: dict) -> float:
    """Per-step learning rate: linear warmup from warmup_start_lr to lr, then cosine to min_lr at max_steps
    (schedule ``warmup_cosine``, the paper's), or ``lr`` throughout (schedule ``constant``, EPInformer's)."""
    if training.get("schedule", "warmup_cosine") == "constant":
        return training["lr"]
    lr, start, warm = training["lr"], training["warmup_start_lr"], training["warmup_steps"]
    end, total = training["min_lr"], training["max_steps"]
    if step < warm:
        return start + (lr - start) * step / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return end + 0.5 * (lr - end) * (1.0 + math.cos(math.pi * progress))


class Task(L.LightningModule):
    """One run's objective, whatever the architecture: the model's own loss (prism.archs contract).
    For Prism that is the paper's pred_loss + lambda1 * intervention_loss + lambda2 * uniform_loss."""

    def __init__(self, arch: dict, spec: dict, training: dict):
        super().__init__()
        self.save_hyperparameters()
        self.spec = spec_of(spec, arch)
        self.training_cfg = training
        self.model = build_model(arch, self.spec)
        self._val = []

    def training_step(self, batch, batch_idx):
        if self.spec.retention < 1.0:  # input-signal dropout (Table 16), inverted so test needs no rescale
            batch = type(batch)(batch.seq, torch.nn.functional.dropout(batch.signals, p=1.0 - self.spec.retention),
                                batch.features, batch.target, batch.index, batch.extra)
        out = self.model.forward_batch(batch, "train")
        losses = self.model.loss(out, batch.target)
        self.log_dict({f"train_{k}": v.detach() for k, v in losses.items() if torch.is_tensor(v) and v.dim() == 0},
                      batch_size=len(batch.target))
        return losses["loss"]

    def validation_step(self, batch, batch_idx):
        out = self.model.forward_batch(batch, "eval")
        self._val.append((batch.target.float().cpu(), out["pred"].float().cpu()))

    def on_validation_epoch_end(self):
        if not self._val:
            return
        y = torch.cat([v[0] for v in self._val]).numpy()
        p = torch.cat([v[1] for v in self._val]).numpy()
        self._val.clear()
        m = regression_metrics(y, p)
        self.log_dict({f"val_{k}": float(m[k]) for k in ("mse", "mae", "pearson")}, prog_bar=False)

    def on_save_checkpoint(self, checkpoint):
        # Global RNG state (signal dropout draws from it), so a resumed run continues bit for bit.
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        # plain tensors and numbers only, so the checkpoint loads with torch.load(weights_only=True)
        checkpoint["rng_states"] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                                    "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint):
        rng = checkpoint.get("rng_states")
        if rng:
            torch.set_rng_state(rng["torch"])
            kind, keys, pos, has_gauss, gauss = rng["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
            random.setstate(rng["python"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def configure_optimizers(self):
        t = self.training_cfg
        opt = torch.optim.AdamW(self.model.param_groups(t["weight_decay"]), lr=t["lr"], betas=tuple(t["betas"]))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_at(step, t) / t["lr"])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Progress(L.Callback):
    """Plain-text progress for job logs (no carriage returns), and history.csv for loss curves."""

    def __init__(self, history: Path, every: int, log):
        self.history, self.every, self._emit = history, max(1, every), log
        self._t0 = time.monotonic()
        self._step0 = 0

    def _append(self, row: dict):
        new = not self.history.exists()
        with open(self.history, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", "kind", "loss", "pred_loss", "intervention_loss",
                                               "uniform_loss", "lr", "val_mse", "val_mae", "val_pearson"])
            if new:
                w.writeheader()
            w.writerow(row)

    def on_train_start(self, trainer, task):
        step = trainer.global_step
        self._step0, self._t0 = step, time.monotonic()
        if self.history.exists():  # resumed: forget what came after the checkpoint
            with open(self.history, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
            self.history.unlink()
            for r in rows:
                self._append(r)
        self._emit(f"training from step {step} to {trainer.max_steps}")

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every and step != trainer.max_steps:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train_")}
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        rate = (step - self._step0) / max(1e-9, time.monotonic() - self._t0)
        self._emit(f"step {step}/{trainer.max_steps} loss {m.get('train_loss', float('nan')):.4f} "
                 f"lr {lr:.2e} ({rate:.1f} steps/s)")
        self._append({"step": step, "kind": "train", "loss": m.get("train_loss"),
                      "pred_loss": m.get("train_pred_loss"), "intervention_loss": m.get("train_intervention_loss"),
                      "uniform_loss": m.get("train_uniform_loss"), "lr": lr})

    def on_validation_end(self, trainer, task):
        if trainer.sanity_checking:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        if m:
            self._emit(f"step {trainer.global_step}: validation mse {m['val_mse']:.4f} "
                     f"mae {m['val_mae']:.4f} pearson {m['val_pearson']:.4f}")
            self._append({"step": trainer.global_step, "kind": "val", **m})


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of a fresh permutation each epoch, drawn from (seed, epoch) alone, that can start mid-epoch.

    Lightning calls ``set_epoch``; :class:`ResumeCheckpoint` calls ``skip`` when a run resumes, so the
    resumed run sees exactly the batches the uninterrupted one would have. The last partial batch is
    dropped (batch statistics of a 1-gene batch would break BatchNorm).
    """

    def __init__(self, n: int, batch_size: int, seed: int, n_choices: int = 1):
        if n < batch_size:
            raise ValueError(f"{n} training genes are fewer than one batch of {batch_size}")
        self.n, self.batch_size, self.seed, self.n_choices = n, batch_size, seed, n_choices
        self.epoch, self._skip = 0, 0

    def __len__(self) -> int:
        return self.n // self.batch_size

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def skip(self, batches: int):
        self._skip = batches

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=gen)
        # mixed-cell training: per gene and epoch, which cell line's signals and target it brings
        choice = torch.randint(self.n_choices, (self.n,), generator=gen) if self.n_choices > 1 else None
        skip, self._skip = self._skip, 0
        for b in range(skip, len(self)):
            idx = perm[b * self.batch_size:(b + 1) * self.batch_size]
            yield idx.tolist() if choice is None else list(zip(idx.tolist(), choice[idx].tolist()))


class AtomicModelCheckpoint(L.pytorch.callbacks.ModelCheckpoint):
    """ModelCheckpoint that writes to a temporary file and renames it: a kill never leaves half a file."""

    def _save_checkpoint(self, trainer, filepath):
        tmp = f"{filepath}.tmp"
        super()._save_checkpoint(trainer, tmp)
        os.replace(tmp, filepath)


class ResumeCheckpoint(L.Callback):
    """``last.ckpt`` every ``every`` steps, on SIGUSR1 (SLURM's warning before a time limit) and on
    SIGTERM (preemption, scancel; Lightning then stops the run with an error, so Snakemake retries it).
    On resume it fast-forwards the sampler to where the checkpoint was taken."""

    def __init__(self, path: Path, every: int, sampler: EpochBatchSampler, log):
        self.path, self.every, self.sampler, self._emit = Path(path), max(1, every), sampler, log
        self._usr1 = False

    def on_train_start(self, trainer, task):
        done_in_epoch = trainer.global_step - trainer.current_epoch * len(self.sampler)
        if done_in_epoch > 0:
            self.sampler.skip(done_in_epoch)
        if hasattr(signal, "SIGUSR1"):
            self._previous = signal.signal(signal.SIGUSR1, self._on_usr1)

    def on_train_end(self, trainer, task):
        if hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, self._previous)

    def _on_usr1(self, signum, frame):
        self._usr1 = True

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0 or self._usr1 or trainer.received_sigterm:
            why = "SIGTERM" if trainer.received_sigterm else "SIGUSR1" if self._usr1 else "interval"
            self._usr1 = False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            trainer.save_checkpoint(tmp)
            os.replace(tmp, self.path)
            if why != "interval":
                self._emit(f"{why}: saved {self.path} at step {step}")


def _retire_stale_checkpoints(ckpt_dir: Path, settings: dict, log):
    """Resume only what was started with the same settings; keep (never delete) checkpoints of other settings."""
    stamp = ckpt_dir / "settings.json"
    text = json.dumps(settings, sort_keys=True, indent=1)
    if ckpt_dir.exists() and (not stamp.exists() or stamp.read_text() != text):
        n = 1
        while (aside := ckpt_dir.with_name(f"checkpoints.superseded.{n}")).exists():
            n += 1
        ckpt_dir.rename(aside)
        log(f"the settings changed since {ckpt_dir} was written: moved it to {aside} and starting afresh")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = stamp.with_name(stamp.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, stamp)


def _quiet_lightning():
    """Keep job logs to what a user reads: no Lightning tips or upstream deprecation noise."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def _atomic_save(obj, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _accelerator(training: dict) -> tuple[str, str]:
    if torch.cuda.is_available():
        return "gpu", ("bf16-mixed" if training.get("precision", "auto") == "auto" else training["precision"])
    return "cpu", "32-true"


def train_run(run: Run, inputs: dict[str, dict], arch: dict, training: dict, out_dir: str | Path, *,
              threads: int | None = None, log=print) -> dict:
    """Train one run; write ``model.pt`` and ``history.csv`` into out_dir; return a summary.

    inputs: {cell: {role: [paths]}} (prism.plan.Plan.data_inputs); arch: {name, kind, model, ...}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    _quiet_lightning()
    L.seed_everything(run.seed, workers=True, verbose=False)
    spec = spec_of(run.model.as_dict(), arch)
    datas = [CellData.from_inputs(c, inputs[c], spec, arch) for c in run.cells]
    train_set = GeneIndex(datas, "train", pick_cell=True)
    val_set = GeneIndex(datas, "valid")
    log(f"run {run.path}: {len(train_set)} train / {len(val_set)} valid genes of {run.cells_id}"
        f"{' (each training gene brings one cell line, drawn per epoch)' if len(datas) > 1 else ''}, "
        f"settings {spec.as_dict()}")
    sampler = EpochBatchSampler(len(train_set), training["batch_size"], run.seed, train_set.n_choices)
    workers = training.get("num_workers", 0)
    # A loader generator of its own: creating an iterator must not draw from the global RNG, or a
    # resumed run would diverge from an uninterrupted one.
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=sampler, collate_fn=train_set.collate, num_workers=workers,
        generator=torch.Generator().manual_seed(run.seed))
    val_loader = torch.utils.data.DataLoader(
        val_set, batch_size=max(64, training["batch_size"]), shuffle=False, collate_fn=val_set.collate,
        num_workers=workers)
    if training.get("max_epochs"):  # EPInformer trains for epochs: the same schedule in steps
        training = {**training, "max_steps": int(training["max_epochs"]) * len(sampler)}
    task = Task(arch, spec.as_dict(), training)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    _retire_stale_checkpoints(ckpt_dir, {"run": run.path, "model": dict(arch["model"]), "training": dict(training),
                                         **({"arch": arch["kind"]} if arch["kind"] != "prism" else {})}, log)
    best_cb = AtomicModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_mse", mode="min",
                                    save_top_k=1, enable_version_counter=False)
    accelerator, precision = _accelerator(training)
    log(f"device {accelerator}, precision {precision}, {torch.get_num_threads()} CPU threads")
    val_every = max(1, len(sampler) // training["val_per_epoch"])
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, precision=precision, max_steps=training["max_steps"],
        max_epochs=-1, gradient_clip_val=training["grad_clip"], val_check_interval=val_every,
        check_val_every_n_epoch=None, num_sanity_val_steps=0, deterministic=True, use_distributed_sampler=False,
        enable_progress_bar=False, enable_model_summary=False, logger=False, default_root_dir=str(out),
        plugins=[LightningEnvironment()],  # no Lightning SLURM auto-requeue: Snakemake and SLURM own the job
        callbacks=[best_cb, ResumeCheckpoint(last, training.get("checkpoint_every", 500), sampler, log),
                   Progress(out / "history.csv", every=max(1, val_every // 2), log=log)],
    )
    if last.exists():
        log(f"resuming from {last}")
    trainer.fit(task, train_loader, val_loader, ckpt_path=str(last) if last.exists() else None, weights_only=True)
    best_path = best_cb.best_model_path or str(last)
    best = torch.load(best_path, map_location="cpu", weights_only=False)
    state = {k.removeprefix("model."): v for k, v in best["state_dict"].items()}
    summary = {"run": run.path, "cells": list(run.cells), "spec": spec.as_dict(), "arch": dict(arch),
               "model_cfg": dict(arch["model"]),
               "best_val_mse": float(best_cb.best_model_score) if best_cb.best_model_score is not None else None,
               "best_step": int(best["global_step"]), "steps": int(trainer.global_step),
               "parameters": sum(p.numel() for p in task.model.parameters() if p.requires_grad)}
    _atomic_save({"state_dict": state, **summary}, out / "model.pt")
    log(f"best validation mse {summary['best_val_mse']} at step {summary['best_step']}; wrote {out / 'model.pt'}")
    return summary
