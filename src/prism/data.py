"""Samples for training and evaluation: one cell line's shards and gene table, held in memory.

Sequence stays as uint8 codes and Hi-C at its bin resolution; both are expanded per batch
(one-hot, bins -> bases), so memory is ~(1 + 4 * n_tracks) bytes per base per gene.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from . import shards
from .genes import FEATURES, DataError



@dataclass
class Batch:
    seq: torch.Tensor        # (B, L, 4) one-hot, N = zeros
    signals: torch.Tensor    # (B, C, L) raw signal values
    features: torch.Tensor   # (B, 9)
    target: torch.Tensor     # (B,) log10(CAGE + 1)
    index: torch.Tensor      # (B,) row in the CellData
    #: inputs only some architectures read, by name (e.g. "blacklist" (B, L) bool for Seq2Exp)
    extra: dict = field(default_factory=dict)

    def to(self, device, **kwargs):
        """On the device; Lightning passes ``non_blocking`` for CUDA."""
        return Batch(*(t.to(device, **kwargs) for t in (self.seq, self.signals, self.features, self.target, self.index)),
                     extra={k: v.to(device, **kwargs) for k, v in self.extra.items()})


class CellData:
    """All genes of one cell line at one input length, with the signals a model asks for.

    ``signals`` are names of the cell line's signals in model order; each is a bigWig track of the
    shards or, if not among them, the shards' Hi-C.
    """

    def __init__(self, cell: str, genes_tsv: str, shard_paths: list[str], signals: list[str], length: int):
        self.cell = cell
        self.length = int(length)
        self.signal_names = list(signals)
        sh = shards.read_shards(shard_paths)
        genes = pd.read_csv(genes_tsv, sep="\t", dtype={"gene_id": str, "chrom": str})
        genes = genes.set_index("gene_id")
        gid = np.asarray(sh["gene_id"]).astype(str)
        missing = [g for g in gid if g not in genes.index]
        if missing:
            raise DataError(f"{shard_paths[0]}...: gene {missing[0]} of the shards is not in {genes_tsv}")
        genes = genes.loc[gid]
        window = int(sh["window"])
        if self.length > window:
            raise DataError(f"input length {self.length} is longer than the shards' window {window} ({cell})")
        self.gene_id = gid
        self.chrom = genes["chrom"].to_numpy()
        self.split = genes["split"].to_numpy()
        self.target = genes["target"].to_numpy(np.float32)
        self.features = genes[list(FEATURES)].to_numpy(np.float32)
        self.seq = np.ascontiguousarray(shards.crop(sh["seq"], window, self.length))
        track_names = [str(t) for t in sh["track_names"]]
        self._channels = []  # per signal: ("track", i) or ("hic", None)
        tracks = []
        for name in self.signal_names:
            if name in track_names:
                tracks.append(shards.crop(sh["tracks"][:, track_names.index(name)], window, self.length))
                self._channels.append(("track", len(tracks) - 1))
            elif sh["hic"].shape[1] > 0:
                self._channels.append(("hic", None))
            else:
                raise DataError(f"cell line {cell}: signal {name!r} is neither a track of its shards "
                                f"({track_names}) nor Hi-C")
        self.tracks = np.ascontiguousarray(np.stack(tracks, 1)) if tracks else None  # (n, T, L)
        self.hic, self.hic_offsets = sh["hic"], sh["hic_offsets"]
        self.hic_resolution, self.tss, self.window = int(sh["hic_resolution"]), sh["tss"], window

    @classmethod
    def from_inputs(cls, cell: str, inputs: dict, spec, arch: dict) -> "CellData":
        """The data of one cell line for one run, from the files the plan names by role
        (prism.plan.Plan.data_inputs: genes, shards or store, and the extra inputs of the architecture)."""
        if "shards" not in inputs:
            raise DataError(f"cell line {cell}: no shards among the inputs ({', '.join(inputs)})")
        data = cls(cell, inputs["genes"][0], inputs["shards"], list(spec.signals), spec.length)
        return data

    def __len__(self) -> int:
        return len(self.gene_id)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def batch(self, idx) -> Batch:
        idx = np.asarray(idx)
        seq = torch.from_numpy(shards.one_hot(self.seq[idx]))  # (B, L, 4)
        chans = []
        hic = None
        for kind, i in self._channels:
            if kind == "track":
                chans.append(self.tracks[idx, i])
            else:
                if hic is None:
                    hic = shards.expand_hic(self.hic[idx], self.hic_offsets, self.hic_resolution,
                                            self.tss[idx], self.window, self.length)
                chans.append(hic)
        signals = (torch.from_numpy(np.stack(chans, 1).astype(np.float32, copy=False)) if chans
                   else torch.zeros(len(idx), 0, self.length))  # (B, C, L)
        return Batch(seq, signals, torch.from_numpy(self.features[idx]), torch.from_numpy(self.target[idx]),
                     torch.from_numpy(idx.astype(np.int64)))


class GeneIndex(torch.utils.data.Dataset):
    """One split of one or more cell lines as a map-style dataset; batches are built in ``collate``.

    Single cell line: item i is gene i of the split. Several cell lines (mixed-cell training, the
    paper's Table 13): ``pick_cell=True`` makes item i a gene present in every cell line, and the
    sampler chooses, per gene and epoch, whose signals and target it brings: keys are ``(i, c)``.
    ``pick_cell=False`` (validation of a mixed run) lists every (gene, cell line) pair once.
    """

    def __init__(self, datas: CellData | list[CellData], split: str, pick_cell: bool = False):
        self.datas = [datas] if isinstance(datas, CellData) else list(datas)
        for d in self.datas:
            if len(d.indices(split)) == 0:
                raise DataError(f"cell line {d.cell}: no genes in the {split!r} split")
        self.pick_cell = pick_cell and len(self.datas) > 1
        if self.pick_cell:
            common = set(self.datas[0].gene_id[self.datas[0].indices(split)])
            for d in self.datas[1:]:
                common &= set(d.gene_id[d.indices(split)])
            if not common:
                raise DataError(f"no {split} gene is shared by {[d.cell for d in self.datas]}")
            genes = sorted(common)
            self.rows = np.stack([_rows_of(d, genes) for d in self.datas], 1)  # (n, n_cells)
        else:
            self.rows = np.concatenate([np.stack([np.full(len(r), c), r], 1)
                                        for c, d in enumerate(self.datas) for r in [d.indices(split)]])  # (n, 2)

    @property
    def n_choices(self) -> int:
        """How many cell lines the sampler chooses among per gene (1: no choice)."""
        return len(self.datas) if self.pick_cell else 1

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> tuple[int, int]:
        """(cell index, row in that cell's data)."""
        if self.pick_cell:
            i, c = key
            return c, int(self.rows[i, c])
        c, r = self.rows[key]
        return int(c), int(r)

    def collate(self, items: list[tuple[int, int]]) -> Batch:
        items = np.asarray(items)  # (B, 2): cell, row
        if len(self.datas) == 1:
            return self.datas[0].batch(items[:, 1])
        parts, order = [], []
        for c, d in enumerate(self.datas):
            sel = np.flatnonzero(items[:, 0] == c)
            if len(sel):
                parts.append(d.batch(items[sel, 1]))
                order.append(sel)
        inv = np.argsort(np.concatenate(order))  # back to the sampler's order
        cat = [torch.cat([getattr(p, f) for p in parts])[inv] for f in ("seq", "signals", "features", "target", "index")]
        extra = {k: torch.cat([p.extra[k] for p in parts])[inv] for k in parts[0].extra}
        return Batch(*cat, extra=extra)


def _rows_of(data: CellData, genes: list[str]) -> np.ndarray:
    pos = {g: i for i, g in enumerate(data.gene_id)}
    return np.array([pos[g] for g in genes], dtype=np.int64)
