"""Training of one run (PyTorch Lightning, as the paper), for every architecture of prism.archs.

``train_run`` fits a model on the train split, validates twice per epoch, keeps the checkpoint with
the lowest validation MSE and writes it as a portable ``model.pt`` (a plain state_dict plus the
architecture and settings needed to rebuild the model; see :mod:`prism.evaluate`). Rerunning it
resumes from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import random
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ._lightning import L  # noqa: I001 (before any other import of Lightning)
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


#: history.csv: the loss and its components as each architecture's loss() names them (Prism: intervention and
#: uniform losses; Seq2Exp: the KL term and the mask's mean), the learning rate, and the validation metrics
HISTORY_COLUMNS = ["step", "kind", "loss", "pred_loss", "intervention_loss", "uniform_loss", "kl_loss",
                   "kl_divergence", "mask_mean", "lr", "val_mse", "val_mae", "val_pearson"]


def _duration(seconds: float) -> str:
    """3h05m, 12m30s or 45s."""
    s = int(round(max(0.0, seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def write_history(rows: list[dict], path: Path):
    """history.csv (:data:`HISTORY_COLUMNS`) of all rows, written whole and atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


class Progress(L.Callback):
    """Plain-text progress for job logs (no carriage returns, steps/s and ETA), and the loss curves.

    The history rows are part of the callback's state, so every checkpoint carries the rows up to
    its step: a resumed run rewrites history.csv whole from them, then appends.
    """

    def __init__(self, history: Path, every: int, log):
        self.history, self.every, self._emit = history, max(1, every), log
        self.rows: list[dict] = []
        self._t0 = time.monotonic()
        self._step0 = 0

    @property
    def state_key(self) -> str:
        return "history"

    def state_dict(self) -> dict:
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state_dict: dict):
        self.rows = [dict(r) for r in state_dict["rows"]]

    def _append(self, row: dict):
        row = {k: row.get(k) for k in HISTORY_COLUMNS}
        self.rows.append(row)
        with open(self.history, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=HISTORY_COLUMNS).writerow(row)

    def on_train_start(self, trainer, task):
        step = trainer.global_step
        self._step0, self._t0 = step, time.monotonic()
        write_history(self.rows, self.history)  # resumed: exactly the rows up to the checkpoint
        self._emit(f"training from step {step} to {trainer.max_steps}")

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every and step != trainer.max_steps:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train_")}
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        rate = (step - self._step0) / max(1e-9, time.monotonic() - self._t0)
        eta = f", eta {_duration((trainer.max_steps - step) / rate)}" if rate > 0 and step < trainer.max_steps else ""
        self._emit(f"step {step}/{trainer.max_steps} loss {m.get('train_loss', float('nan')):.4f} "
                   f"lr {lr:.2e} ({rate:.1f} steps/s{eta})")
        self._append({"step": step, "kind": "train", "lr": lr,
                      **{k.removeprefix("train_"): v for k, v in m.items() if k.removeprefix("train_") in HISTORY_COLUMNS}})

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

    Every epoch has ``len(self)`` batches, so global step s (batches trained so far) is batch s % len of
    epoch s // len: :meth:`start_at` puts the next iteration there. :class:`ResumeCheckpoint` calls it
    when a checkpoint is restored and at every epoch's start, so the data of a step depends on the step
    alone, never on Lightning's epoch counter (Lightning calls ``set_epoch`` only on a batch sampler's
    ``.sampler``, which this one has not, so it has none). The last partial batch is dropped (batch
    statistics of a 1-gene batch would break BatchNorm).
    """

    def __init__(self, n: int, batch_size: int, seed: int, n_choices: int = 1):
        if n < batch_size:
            raise ValueError(f"{n} training genes are fewer than one batch of {batch_size}")
        self.n, self.batch_size, self.seed, self.n_choices = n, batch_size, seed, n_choices
        self.epoch, self._skip = 0, 0

    def __len__(self) -> int:
        return self.n // self.batch_size

    def start_at(self, step: int):
        """Start the next iteration where global step ``step`` (0 = the first batch of epoch 0) is."""
        self.epoch, self._skip = divmod(int(step), len(self))

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
    """ModelCheckpoint that writes to a temporary file and renames it: a kill never leaves half a file.

    Its restored state keeps the best score even when the run's folder was moved since it was saved
    (Lightning would forget it and could then keep a worse model as "best").
    """

    def _save_checkpoint(self, trainer, filepath):
        tmp = f"{filepath}.tmp"
        super()._save_checkpoint(trainer, tmp)
        os.replace(tmp, filepath)

    def load_state_dict(self, state_dict):
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath:
            state_dict = {k: (v.replace(old, self.dirpath, 1) if isinstance(v, str) and v.startswith(old) else v)
                          for k, v in state_dict.items()}
            state_dict["best_k_models"] = {k.replace(old, self.dirpath, 1): v
                                           for k, v in state_dict.get("best_k_models", {}).items()}
        super().load_state_dict(state_dict)


class ValidateLastStep(L.Callback):
    """A validation at the last step too, so that the best model may be the trained one: Lightning
    validates every ``val_check_interval`` steps only, and max_steps need not be a multiple of it.
    (Asking to stop at the last step is what makes Lightning validate there.)"""

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx):
        if trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


class ResumeCheckpoint(L.pytorch.callbacks.Checkpoint):
    """``last.ckpt``: every ``every`` steps, on SIGTERM (preemption, scancel, Snakemake stopping a job),
    SIGINT (Ctrl-C) and SIGUSR1, and when training ends (the complete checkpoint a rerun finishes from).

    A checkpoint is only taken where a resumed run continues exactly as the uninterrupted one would:
    after the step's validation when one is due (Lightning does not repeat a validation on resume), and
    as a Checkpoint callback it runs after the best-model callback, so the best score it saves is current.
    SIGTERM and SIGINT then stop the run with an error (Snakemake reruns or retries it); SIGUSR1 goes on.
    It positions the sampler (:meth:`EpochBatchSampler.start_at`) at the restored checkpoint's step and
    at every epoch's start, so a resumed run draws exactly the batches of the uninterrupted one.
    """

    SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")

    def __init__(self, path: Path, every: int, sampler: EpochBatchSampler, log):
        self.path, self.every, self.sampler, self._emit = Path(path), max(1, every), sampler, log
        self._signal: str | None = None  # the signal waiting for the next checkpoint
        self._due = False  # a checkpoint is waiting for this step's validation
        self._previous: dict = {}

    def on_load_checkpoint(self, trainer, task, checkpoint):
        # Before Lightning creates the loader's first iterator (with workers it draws batches at once).
        # From the step, not Lightning's epoch counter: after a checkpoint taken at an epoch's last batch
        # after its validation, Lightning still counts that epoch as running and closes it without a batch.
        self.sampler.start_at(checkpoint["global_step"])

    def on_train_epoch_start(self, trainer, task):
        self.sampler.start_at(trainer.global_step)

    def on_train_start(self, trainer, task):
        for name in self.SIGNALS:
            if hasattr(signal, name):
                try:  # replaces Lightning's SIGTERM handler, which would stop before a checkpoint is taken
                    self._previous[name] = signal.signal(getattr(signal, name), self._on_signal)
                except ValueError:  # not the main thread: signals stay as they are
                    pass

    def _restore_signals(self):
        for name, handler in self._previous.items():
            signal.signal(getattr(signal, name), handler)
        self._previous = {}

    def on_exception(self, trainer, task, exception):
        self._restore_signals()

    def _on_signal(self, signum, frame):
        # only a flag: printing here could re-enter a print the signal interrupted
        name = signal.Signals(signum).name
        if self._signal in ("SIGTERM", "SIGINT") and name == "SIGINT":
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        if self._signal not in ("SIGTERM", "SIGINT"):
            self._signal = name

    def _validation_due(self, trainer, step: int) -> bool:
        every = trainer.val_check_batch
        return isinstance(every, int) and every > 0 and step % every == 0

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx):
        step = trainer.global_step
        if step >= trainer.max_steps or not (step % self.every == 0 or self._signal):
            return  # the last step is saved by on_train_end
        if self._validation_due(trainer, step):
            self._due = True  # after the validation (on_validation_end)
        else:
            self._checkpoint(trainer)

    def on_validation_end(self, trainer, task):
        if self._due and not trainer.sanity_checking:
            self._checkpoint(trainer)

    def on_train_end(self, trainer, task):
        self._restore_signals()
        self._save(trainer)

    def _save(self, trainer):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(tmp, weights_only=False)
        os.replace(tmp, self.path)

    def _checkpoint(self, trainer):
        self._due = False
        self._save(trainer)
        why, self._signal = self._signal, None
        if why:
            self._emit(f"{why}: saved {self.path} at step {trainer.global_step}")
        if why in ("SIGTERM", "SIGINT"):
            self._emit(f"{why}: stopping; rerunning the job resumes from step {trainer.global_step}")
            raise KeyboardInterrupt  # Lightning shuts down and exits with status 1


# ---------------------------------------------------------------- what a checkpoint was trained from


def file_md5(path) -> str:
    """md5 (hex) of a file's bytes."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def input_fingerprint(paths, cache: dict | None = None) -> tuple[dict[str, str], dict]:
    """({path: md5}, new cache) of the files a run reads (its gene tables and shards).

    cache: {path: {"size", "mtime_ns", "md5"}} from an earlier call; an md5 is reused when the file's
    size and modification time (ns) are unchanged, so a rerun over untouched inputs reads none of them.
    A file rewritten with other bytes but the same size and mtime_ns would be missed: only a deliberate
    ``touch -r`` or ``cp -p`` of another file does that (Snakemake itself would not rerun the job either).
    """
    cache = cache or {}
    md5s, new_cache = {}, {}
    for p in sorted(set(map(str, paths))):
        st = os.stat(p)
        hit = cache.get(p)
        if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
            md5 = hit["md5"]
        else:
            md5 = file_md5(p)
        md5s[p] = md5
        new_cache[p] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": md5}
    return md5s, new_cache


def _write_json(path: Path, obj):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, sort_keys=True, indent=1))
    os.replace(tmp, path)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _stamp_changes(old: dict | None, new: dict) -> str:
    """What differs between two stamps, in one short phrase ('' if nothing)."""
    if not isinstance(old, dict):
        return "it has no stamp of its settings and inputs"
    changed = []
    for part in ("run", "model", "training"):
        a, b = old.get(part), new.get(part)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            changed += [f"{part}.{k} {a.get(k)!r} -> {b.get(k)!r}" for k in keys]
        else:
            changed.append(f"{part} {a!r} -> {b!r}")
    if changed:
        return "the settings changed (" + "; ".join(changed[:3]) + (f"; {len(changed) - 3} more" if len(changed) > 3 else "") + ")"
    a, b = old.get("inputs") or {}, new["inputs"]
    diff = sorted(p for p in set(a) | set(b) if a.get(p) != b.get(p))
    if diff:
        what = [f"{p} " + ("is new" if p not in a else "is gone" if p not in b else "has other content") for p in diff]
        return (f"the inputs changed ({'; '.join(what[:3])}" + (f"; {len(what) - 3} more" if len(what) > 3 else "")
                + f"; {len(diff)} of {len(b)} files)")
    return ""


def _prepare_checkpoints(ckpt_dir: Path, settings: dict, inputs: list[str], log) -> None:
    """Resume only what was trained from the same settings and the same input files (md5 of each).

    Anything else (other settings, changed inputs, an unreadable checkpoint) is moved aside, never
    deleted, and the run starts afresh. Writes the stamp (``stamp.json``) and the md5 cache
    (``inputs.json``) of the checkpoints that this run will write.
    """
    cache_path, stamp_path = ckpt_dir / "inputs.json", ckpt_dir / "stamp.json"
    md5s, cache = input_fingerprint(inputs, _read_json(cache_path) if ckpt_dir.exists() else None)
    stamp = {**settings, "inputs": md5s}
    if ckpt_dir.exists() and any(ckpt_dir.iterdir()):
        why = _stamp_changes(_read_json(stamp_path), stamp)
        last = ckpt_dir / "last.ckpt"
        if not why and last.exists():
            try:
                torch.load(last, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is set aside, never trusted
                why = f"{last} cannot be read ({type(exc).__name__})"
        if why:
            n = 1
            while (aside := ckpt_dir.with_name(f"checkpoints.superseded.{n}")).exists():
                n += 1
            ckpt_dir.rename(aside)
            log(f"{why} since {ckpt_dir} was written: moved it to {aside} and starting afresh")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    _write_json(cache_path, cache)
    _write_json(stamp_path, stamp)


def _quiet_lightning():
    """Keep job logs to what a user reads: no Lightning tips, upstream deprecation noise, or warnings
    that do not apply to this training loop."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # resuming mid-epoch is exact here: ResumeCheckpoint positions the sampler (tests/test_train.py)
    warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")
    # the folder holds this run's stamp and checkpoints by design
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # one process per job, under SLURM too (the profile submits each job; LightningEnvironment, not SLURM's)
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")


def _atomic_save(obj, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _accelerator(training: dict) -> tuple[str, str]:
    if torch.cuda.is_available():
        return "gpu", ("bf16-mixed" if training.get("precision", "auto") == "auto" else training["precision"])
    return "cpu", "32-true"


def _finish(run: Run, spec, arch: dict, task: "Task", ckpt_dir: Path, out: Path, log) -> dict:
    """model.pt (the best validation checkpoint) and history.csv (whole), both from the checkpoints
    of a complete run; returns the summary written into model.pt."""
    last = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)
    best_path = ckpt_dir / "best.ckpt"
    best = torch.load(best_path, map_location="cpu", weights_only=True) if best_path.exists() else last
    score = next((s["best_model_score"] for s in last.get("callbacks", {}).values()
                  if isinstance(s, dict) and "best_model_score" in s), None)
    state = {k.removeprefix("model."): v for k, v in best["state_dict"].items()}
    summary = {"run": run.path, "cells": list(run.cells), "spec": spec.as_dict(), "arch": dict(arch),
               "model_cfg": dict(arch["model"]),
               "best_val_mse": float(score) if score is not None else None,
               "best_step": int(best["global_step"]), "steps": int(last["global_step"]),
               "parameters": sum(p.numel() for p in task.model.parameters() if p.requires_grad)}
    write_history(last["callbacks"]["history"]["rows"], out / "history.csv")
    _atomic_save({"state_dict": state, **summary}, out / "model.pt")
    if score is None:  # fewer steps than one validation interval
        log(f"no validation ran in {summary['steps']} steps: {out / 'model.pt'} holds the last step's weights")
    else:
        log(f"best validation mse {summary['best_val_mse']} at step {summary['best_step']}; wrote {out / 'model.pt'}")
    return summary


def _checkpoint_step(path: Path) -> int | None:
    if not path.exists():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def train_run(run: Run, inputs: dict[str, dict], arch: dict, training: dict, out_dir: str | Path, *,
              threads: int | None = None, log=print) -> dict:
    """Train one run; write ``model.pt`` and ``history.csv`` into out_dir; return a summary.

    inputs: {cell: {role: [paths]}} (prism.plan.Plan.data_inputs); arch: {name, kind, model, ...}.
    Checkpoints (``out_dir/checkpoints``) are resumed only if they were written with the same settings
    from the same input files (md5 of each); otherwise they are moved aside. A run whose checkpoint is
    complete (at ``max_steps``) trains nothing: it rewrites model.pt and history.csv.
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
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    files = list(dict.fromkeys(p for c in run.cells for role, paths in inputs[c].items() for p in paths))
    _prepare_checkpoints(ckpt_dir, {"run": run.path, "model": dict(arch["model"]), "training": dict(training),
                                    **({"arch": arch["kind"]} if arch["kind"] != "prism" else {})}, files, log)
    task = Task(arch, spec.as_dict(), training)
    if (done := _checkpoint_step(last)) is not None and done >= training["max_steps"]:
        log(f"{last} is complete (step {done} of {training['max_steps']}, same settings and inputs): "
            f"nothing to train")
        return _finish(run, spec, arch, task, ckpt_dir, out, log)
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
        # Progress first: a checkpoint taken at a step holds that step's history rows
        callbacks=[Progress(out / "history.csv", every=max(1, val_every // 2), log=log), best_cb,
                   ResumeCheckpoint(last, training.get("checkpoint_every", 500), sampler, log), ValidateLastStep()],
    )
    if last.exists():
        log(f"resuming from {last}")
    trainer.fit(task, train_loader, val_loader, ckpt_path=str(last) if last.exists() else None, weights_only=True)
    return _finish(run, spec, arch, task, ckpt_dir, out, log)
