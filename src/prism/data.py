"""Samples for training and evaluation: one cell line's shards and gene table, held in memory.

Sequence stays as uint8 codes and Hi-C at its bin resolution; both are expanded per batch
(one-hot, bins -> bases), so memory is ~(1 + 4 * n_tracks) bytes per base per gene.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

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

    ``signals`` are names of the cell line's signals in model order; each is a track (bigWig, bigBed)
    or, if not among them, the Hi-C. Inputs up to the shards' window come from the shards, held in
    memory; longer ones from the base-resolution store (prism.store), sliced per batch.
    """

    def __init__(self, cell: str, genes_tsv: str, shard_paths: list[str], signals: list[str], length: int):
        self.cell = cell
        self.length = int(length)
        self.signal_names = list(signals)
        self.store = self.elements = None
        self.intervals: dict[str, dict] = {}  # extra inputs as intervals per chromosome (blacklist, peaks)
        sh = shards.read_shards(shard_paths)
        gid = np.asarray(sh["gene_id"]).astype(str)
        self._genes(genes_tsv, gid, f"{shard_paths[0]}...")
        window = int(sh["window"])
        if self.length > window:
            raise DataError(f"input length {self.length} is longer than the shards' window {window} ({cell})")
        self.seq = np.ascontiguousarray(shards.crop(sh["seq"], window, self.length))
        track_names = [str(t) for t in sh["track_names"]]
        self._channels = self._channel_map(track_names, sh["hic"].shape[1] > 0)
        tracks = [shards.crop(sh["tracks"][:, track_names.index(n)], window, self.length)
                  for kind, n in self._channels if kind == "track"]
        self.tracks = np.ascontiguousarray(np.stack(tracks, 1)) if tracks else None  # (n, T, L)
        self.hic, self.hic_offsets = sh["hic"], sh["hic_offsets"]
        self.hic_resolution, self.tss, self.window = int(sh["hic_resolution"]), sh["tss"], window

    def _genes(self, genes_tsv, gid: np.ndarray, source: str):
        genes = pd.read_csv(genes_tsv, sep="\t", dtype={"gene_id": str, "chrom": str}).set_index("gene_id")
        missing = [g for g in gid if g not in genes.index]
        if missing:
            raise DataError(f"{source}: gene {missing[0]} is not in {genes_tsv}")
        genes = genes.loc[gid]
        self.gene_id = gid
        self.chrom = genes["chrom"].to_numpy()
        self.split = genes["split"].to_numpy()
        self.target = genes["target"].to_numpy(np.float32)  # NaN for a cell line without expression
        self.features = genes[list(FEATURES)].to_numpy(np.float32)
        return genes

    def _channel_map(self, track_names: list[str], has_hic: bool) -> list[tuple[str, str]]:
        """Per signal: ("track", name) or ("hic", name), in model order."""
        out = []
        for name in self.signal_names:
            if name in track_names:
                out.append(("track", name))
            elif has_hic:
                out.append(("hic", name))
            else:
                raise DataError(f"cell line {self.cell}: signal {name!r} is neither a track ({track_names}) nor Hi-C")
        return out

    @classmethod
    def from_store(cls, cell: str, genes_tsv: str, genome: list[str], store: list[str], signals: list[str],
                   length: int) -> "CellData":
        """Longer inputs: the genome store (results/store/genome/{chrom}.npy) and the cell line's track and
        long Hi-C stores (results/store/{cell}/{chrom}.tracks.npy, .hic.npz), sliced per batch."""
        from .genes import read_gene_table
        from .store import GenomeStore, StoreSource

        self = cls.__new__(cls)
        self.cell, self.length, self.signal_names, self.intervals = cell, int(length), list(signals), {}
        chroms = [Path(p).name.removesuffix(".npy") for p in genome]
        tracks = {Path(p).name.removesuffix(".tracks.npy"): p for p in store if p.endswith(".tracks.npy")}
        hic = {Path(p).name.removesuffix(".hic.npz"): p for p in store if p.endswith(".hic.npz")}
        table = read_gene_table(genes_tsv)
        table = table[table["chrom"].isin(chroms)]
        order = {c: i for i, c in enumerate(chroms)}
        table = table.assign(_o=table["chrom"].map(order)).sort_values(["_o", "tss"], kind="stable")
        self._genes(genes_tsv, table["gene_id"].to_numpy(str), str(genes_tsv))
        self.tss = table["tss"].to_numpy(np.int64)
        first = next(iter(tracks.values()), None)
        stored = [t["name"] for t in json.loads(Path(first.removesuffix(".npy") + ".json").read_text())["tracks"]] \
            if first else []
        self._channels = self._channel_map(stored, bool(hic))
        names = [n for kind, n in self._channels if kind == "track"]
        self.store = StoreSource(GenomeStore({c: p for c, p in zip(chroms, genome)}), tracks if names else None,
                                 hic or None, track_names=names)
        if self.store.hic_window and self.length > self.store.hic_window:
            raise DataError(f"input length {self.length} is longer than the Hi-C store's {self.store.hic_window} "
                            f"({cell}; preprocess.store_length)")
        return self

    @classmethod
    def from_elements(cls, cell: str, genes_tsv: str, candidates: str, genome: list[str], hp: dict) -> "CellData":
        """EPInformer's data: per gene the promoter and its candidate enhancers (prism.candidates), their
        sequences read from the genome store; no TSS window (seq and signals are empty)."""
        from .candidates import ElementBatcher
        from .genes import read_gene_table
        from .store import GenomeStore

        self = cls.__new__(cls)
        self.cell, self.length, self.signal_names, self.intervals, self.store = cell, 0, [], {}, None
        chroms = [Path(p).name.removesuffix(".npy") for p in genome]
        table = read_gene_table(genes_tsv)
        table = table[table["chrom"].isin(chroms)]
        self._genes(genes_tsv, table["gene_id"].to_numpy(str), str(genes_tsv))
        self.tss = table["tss"].to_numpy(np.int64)
        self._channels = []
        codes = GenomeStore({c: p for c, p in zip(chroms, genome)}).read_codes
        self.elements = ElementBatcher(candidates, table, codes, n_elements=hp.get("n_elements", 60),
                                       element_length=hp.get("element_length", 2000))
        return self

    @classmethod
    def from_inputs(cls, cell: str, inputs: dict, spec, arch: dict) -> "CellData":
        """The data of one cell line for one run, from the files the plan names by role
        (prism.plan.Plan.data_inputs: genes, shards or store, and the extra inputs of the architecture)."""
        from .store import read_bed_intervals

        if "candidates" in inputs:
            return cls.from_elements(cell, inputs["genes"][0], inputs["candidates"][0], inputs["genome"],
                                     arch["model"])
        if "shards" in inputs:
            data = cls(cell, inputs["genes"][0], inputs["shards"], list(spec.signals), spec.length)
        elif "store" in inputs:
            data = cls.from_store(cell, inputs["genes"][0], inputs["genome"], inputs["store"], list(spec.signals),
                                  spec.length)
        else:
            raise DataError(f"cell line {cell}: neither shards nor a store among the inputs ({', '.join(inputs)})")
        for name in ("blacklist", "peaks"):
            if name in inputs:
                data.intervals[name] = read_bed_intervals(inputs[name][0])
        return data

    def __len__(self) -> int:
        return len(self.gene_id)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def _window(self, idx: np.ndarray):
        """(sequence codes (B, L), {track name: (B, L)}, Hi-C per base (B, L) or None) of rows idx."""
        if self.store is None:
            codes = self.seq[idx]
            tracks = {n: self.tracks[idx, i] for i, n in enumerate(n for k, n in self._channels if k == "track")}
            bins, offsets, res, window = self.hic[idx] if self.hic.shape[1] else None, self.hic_offsets, \
                self.hic_resolution, self.window
        else:
            got = self.store.fetch(self.chrom[idx], self.tss[idx], self.length)
            codes = got.seq
            tracks = {n: got.tracks[:, i] for i, n in enumerate(self.store.track_names)}
            bins, offsets, res, window = (got.hic if got.hic.shape[1] else None), self.store.hic_offsets, \
                self.store.hic_resolution, self.store.hic_window
        need_hic = any(k == "hic" for k, _ in self._channels)
        hic = shards.expand_hic(bins, offsets, res, self.tss[idx], window, self.length) \
            if need_hic and bins is not None else None
        return codes, tracks, hic

    def batch(self, idx) -> Batch:
        idx = np.asarray(idx)
        if getattr(self, "elements", None) is not None:  # EPInformer: elements instead of a window
            return Batch(torch.zeros(len(idx), 0, 4), torch.zeros(len(idx), 0, 0), torch.from_numpy(self.features[idx]),
                         torch.from_numpy(self.target[idx]), torch.from_numpy(idx.astype(np.int64)),
                         self.elements.extras(self.gene_id[idx]))
        codes, tracks, hic = self._window(idx)
        seq = torch.from_numpy(shards.one_hot(codes))  # (B, L, 4)
        chans = [tracks[n] if kind == "track" else hic for kind, n in self._channels]
        signals = (torch.from_numpy(np.stack(chans, 1).astype(np.float32, copy=False)) if chans
                   else torch.zeros(len(idx), 0, self.length))  # (B, C, L)
        extra = {}
        if self.intervals:
            from .store import batch_interval_mask

            starts = self.tss[idx] - self.length // 2
            for name, by_chrom in self.intervals.items():
                mask = batch_interval_mask(by_chrom, self.chrom[idx], starts, self.length)  # (B, L) bool
                extra[name] = torch.from_numpy(mask if name == "blacklist" else mask.astype(np.float32))
        return Batch(seq, signals, torch.from_numpy(self.features[idx]), torch.from_numpy(self.target[idx]),
                     torch.from_numpy(idx.astype(np.int64)), extra)


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
