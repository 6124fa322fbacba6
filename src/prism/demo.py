"""Deterministic synthetic mirror of every remote asset, in the real formats and layout.

:func:`write_mirror` writes, under one folder, the files the workflow would download (same
relative paths as the real hosts, see DATA.md), so download, preprocessing and training rules
run end to end on a laptop. Everything is drawn from one seed; gzip headers carry mtime 0,
tables are sorted and floats formatted with fixed precision, so two runs give identical bytes.

The planted biology, per cell line c and gene g (expression on the log10(CAGE + 1) scale):

    y[c, g] = 0.2 * k[g] + 0.8 * a[c, g] + 0.6 * z[c, g] + N(0, 0.15), clipped to [0, 3.3]

- ``k``: copies of :data:`MOTIF` planted on the forward strand within [TSS - 250, TSS + 250)
  (0..4 copies, shared by all cell lines: same genome);
- ``a``: promoter H3K27ac level, drawn per cell line and shown as a peak at the TSS in the
  H3K27ac bigWig (``a`` leans on ``z``: active domains carry more acetylation);
- ``z``: background state of the chromatin domain holding the gene (domains of 20-80 kb). It
  is the confounder: it also raises DNase (promoter peak and domain background) and the Hi-C
  contacts of every bin in the domain.

The half-life features are noise (no planted effect). synthA and synthB take expression from
the Xpresso-style CSV and promoter activity from an ABC GeneList; synthC is the cell line added
through config alone: expression from a FANTOM5-style CAGE bigWig, promoter activity derived
from its bigWigs. synthC's DNase bigWig and .hic name chromosomes Ensembl-style (``1``, ``X``)
to exercise the ``1`` vs ``chr1`` mapping.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .genes import HALFLIFE_FEATURES

#: planted promoter motif (a GC box); expression rises 0.2 log10 units per copy near the TSS
MOTIF = "GGGGCGGGGC"
#: half-width of the region around the TSS where motif copies count (bp)
MOTIF_FLANK = 250
#: Hi-C bin size of the demo .hic files (bp)
HIC_RESOLUTION = 5000

#: chromosome -> (length in bp, share of genes, fold_11 split)
CHROMOSOMES = {
    "chr1": (600_123, 0.32, "train"),
    "chr2": (520_457, 0.28, "train"),
    "chr3": (380_311, 0.12, "valid"),
    "chr21": (300_089, 0.08, "valid"),
    "chr22": (320_233, 0.09, "test"),
    "chrX": (360_571, 0.11, "test"),
}

CELLS = ("synthA", "synthB", "synthC")
#: the cell line whose mirror also carries a DNase-footprint bigBed (ENCODE-style, kind bigbed)
FOOTPRINT_CELL = "synthA"
#: cells whose expression and promoter activity come from the CSV / ABC GeneList
CSV_CELLS = ("synthA", "synthB")


SPLIT_CSV = "epinformer/leave_chrom_out_crossvalidation_split_18377genes.csv"
HALFLIFE_CSV = "epinformer/mRNA_halflife_features.csv"
EXPRESSION_CSV = "xpresso/GM12878_K562_18377_gene_expr_fromXpresso.csv"
GENOME = "genome/hg38.ml.fa.gz"

# per-base signals are written as constant runs of this many bases (bedGraph-like entries)
_STEP = 25
# RPM-like scale of the ABC GeneList columns relative to the mean fold change over TSS +-500
_RPM_PER_FOLD = 3.0
_FOLDS = 12


def expression_column(cell: str) -> str:
    """Name of the CAGE column of `cell` in the Xpresso-style expression CSV."""
    return f"{cell}_CAGE_128*3_sum"


def write_mirror(
    out_dir,
    *,
    seed: int = 0,
    n_genes: int = 600,
    cells=CELLS,
) -> dict:
    """Write the synthetic mirror under `out_dir` and return where everything is.

    Returns a dict: ``root``, ``genome``, ``split_csv``, ``halflife_csv``, ``expression_csv``,
    ``manifest`` (paths as str), ``chromosomes`` {name: length}, ``motif``, ``n_genes``
    {split: count}, and ``cells`` {cell: {"h3k27ac"/"dnase"/"hic": {"accession", "path",
    "md5", "file_size"}, "genelist": path or None, "cage_bigwig": path or None,
    "expression_column": str or None}}; synthA's entry also has "footprints" (a bigBed, same record). ``MANIFEST.json`` lists every file with md5 and size.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    chrom_sizes = {c: v[0] for c, v in CHROMOSOMES.items()}

    genome, n_runs = _make_genome(rng)
    genes = _place_genes(rng, n_genes, n_runs)
    _plant_motifs(rng, genome, genes)
    _write_fasta_gz(root / GENOME, genome)

    _write_gene_tables(rng, root, genes, cells)
    result = {
        "root": str(root),
        "genome": str(root / GENOME),
        "split_csv": str(root / SPLIT_CSV),
        "halflife_csv": str(root / HALFLIFE_CSV),
        "expression_csv": str(root / EXPRESSION_CSV),
        "chromosomes": dict(chrom_sizes),
        "motif": MOTIF,
        "n_genes": {s: int((genes["split"] == s).sum()) for s in ("train", "valid", "test")},
        "cells": {},
    }

    expr_table = {}
    for ci, cell in enumerate(cells):
        letter = cell[-1].upper() if cell.startswith("synth") else chr(ord("A") + ci)
        crng = np.random.default_rng([seed, 1000 + ci])
        state = _cell_state(crng, genes, n_runs)
        expr_table[cell] = state["cage"]
        entry = {"genelist": None, "cage_bigwig": None, "expression_column": None}
        ensembl_names = cell not in CSV_CELLS  # the config-only cell uses "1", "X" in some files
        for j, (mark, signal) in enumerate((("h3k27ac", state["h3k27ac"]), ("dnase", state["dnase"]))):
            acc = f"ENCFFSY{letter}{j + 1:03d}"
            path = root / "encode" / "files" / acc / "@@download" / f"{acc}.bigWig"
            _write_bigwig(path, signal, rename=ensembl_names and mark == "dnase")
            entry[mark] = _file_record(acc, path)
            meta = {
                "accession": acc,
                "md5sum": entry[mark]["md5"],
                "file_size": entry[mark]["file_size"],
                "assembly": "GRCh38",
                "output_type": "fold change over control",
                "file_format": "bigWig",
                "status": "released",
            }
            _write_json(root / "encode" / "files" / acc / "metadata.json", meta)
        acc = f"4DNFISYNTH{letter}1"
        path = root / "4dn" / "files-processed" / acc / "@@download" / f"{acc}.hic"
        _write_hic(path, state["hic_pixels"], rename=ensembl_names)
        entry["hic"] = _file_record(acc, path)
        _write_json(
            root / "4dn" / "files-processed" / acc / "metadata.json",
            {"accession": acc, "md5sum": entry["hic"]["md5"], "file_size": entry["hic"]["file_size"],
             "status": "released"},
        )
        if cell == FOOTPRINT_CELL:
            # own generator: the footprints leave every other file of the mirror unchanged
            acc = f"ENCFFSY{letter}003"
            path = root / "encode" / "files" / acc / "@@download" / f"{acc}.bigBed"
            write_bigbed(path, chrom_sizes, _footprints(np.random.default_rng([seed, 3000 + ci]), genes))
            entry["footprints"] = _file_record(acc, path)
            _write_json(
                root / "encode" / "files" / acc / "metadata.json",
                {"accession": acc, "md5sum": entry["footprints"]["md5"], "file_size": entry["footprints"]["file_size"],
                 "assembly": "GRCh38", "output_type": "footprints", "file_format": "bigBed", "status": "released"},
            )
            # the experiment, as ENCODE lists its files: the footprints are found by experiment, not file
            _write_json(
                root / "encode" / "experiments" / f"ENCSRSY{letter}001" / "metadata.json",
                {"accession": f"ENCSRSY{letter}001", "assay_term_name": "DNase-seq", "files": [
                    {"accession": acc, "output_type": "footprints", "file_format": "bigBed",
                     "assembly": "GRCh38", "status": "released"},
                    {"accession": f"ENCFFSY{letter}004", "output_type": "footprints", "file_format": "bed",
                     "assembly": "GRCh38", "status": "released"},
                    {"accession": f"ENCFFSY{letter}005", "output_type": "footprints", "file_format": "bigBed",
                     "assembly": "hg19", "status": "released"},
                ]},
            )
        if cell in CSV_CELLS:
            entry["genelist"] = str(_write_genelist(root / "abc" / cell / "GeneList.txt", genes, state))
            entry["expression_column"] = expression_column(cell)
        else:
            path = root / "fantom5" / f"{cell}_CAGE.bw"
            _write_cage_bigwig(path, genes, state["cage"])
            entry["cage_bigwig"] = str(path)
        result["cells"][cell] = entry

    _write_expression_csv(root / EXPRESSION_CSV, genes, {c: expr_table[c] for c in cells if c in CSV_CELLS})
    result["manifest"] = str(_write_manifest(root))
    return result


# ---------------------------------------------------------------- genome and genes


def _make_genome(rng) -> tuple[dict[str, np.ndarray], dict[str, list[tuple[int, int]]]]:
    """Random uppercase sequence (41% GC) per chromosome as uint8 ASCII, with 2-3 internal N runs."""
    genome, n_runs = {}, {}
    probs = [0.295, 0.205, 0.205, 0.295]
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    for chrom, (size, _, _) in CHROMOSOMES.items():
        seq = letters[rng.choice(4, size=size, p=probs)]
        runs = []
        for _ in range(int(rng.integers(2, 4))):
            length = int(rng.integers(1000, 4000))
            start = int(rng.integers(5000, size - 5000 - length))
            seq[start : start + length] = ord("N")
            runs.append((start, start + length))
        genome[chrom] = seq
        n_runs[chrom] = sorted(runs)
    return genome, n_runs


def _place_genes(rng, n_genes: int, n_runs) -> pd.DataFrame:
    """TSSs on a jittered 2.5 kb grid away from N runs; one gene 350 bp from the start of chr22
    and one 600 bp from the end of chrX exercise edge padding."""
    shares = np.array([v[1] for v in CHROMOSOMES.values()])
    counts = np.floor(shares * n_genes).astype(int)
    counts[np.argsort(-shares)[: n_genes - counts.sum()]] += 1
    rows = []
    for (chrom, (size, _, split)), n in zip(CHROMOSOMES.items(), counts):
        slots = np.arange(2500, size - 2500, 2500) + rng.integers(-300, 300, size=len(np.arange(2500, size - 2500, 2500)))
        keep = np.ones(len(slots), dtype=bool)
        for s, e in n_runs[chrom]:
            keep &= (slots < s - 1500) | (slots >= e + 1500)
        slots = slots[keep]
        if n > len(slots):
            raise ValueError(f"demo: {chrom} holds at most {len(slots)} genes, asked for {n}")
        tss = np.sort(rng.choice(slots, size=n, replace=False))
        if chrom == "chr22" and n > 1:
            tss[0] = 350
        if chrom == "chrX" and n > 1:
            tss[-1] = size - 600
        for t in tss:
            rows.append((chrom, int(t), split))
    genes = pd.DataFrame(rows, columns=["chrom", "tss", "split"])
    genes["gene_id"] = [f"ENSG{90000000001 + i:011d}" for i in range(len(genes))]
    genes["gene_name"] = [f"SYN{i + 1:04d}" for i in range(len(genes))]
    genes["strand"] = np.where(rng.random(len(genes)) < 0.5, "+", "-")
    genes["motif_count"] = rng.integers(0, 5, size=len(genes))
    return genes


def _plant_motifs(rng, genome, genes: pd.DataFrame) -> None:
    """Write `motif_count` non-overlapping copies of MOTIF into [TSS - 250, TSS + 250)."""
    motif = np.frombuffer(MOTIF.encode(), dtype=np.uint8)
    m = len(motif)
    slots_per_region = (2 * MOTIF_FLANK) // (m + 2)
    for chrom, tss, k in zip(genes["chrom"], genes["tss"], genes["motif_count"]):
        lo = tss - MOTIF_FLANK
        for slot in np.sort(rng.choice(slots_per_region, size=int(k), replace=False)):
            start = lo + int(slot) * (m + 2) + 1
            genome[chrom][start : start + m] = motif


def _write_fasta_gz(path: Path, genome) -> None:
    buf = io.BytesIO()
    for chrom, seq in genome.items():
        buf.write(f">{chrom}\n".encode())
        raw = seq.tobytes()
        buf.write(b"\n".join(raw[i : i + 60] for i in range(0, len(raw), 60)))
        buf.write(b"\n")
    _atomic_bytes(path, gzip.compress(buf.getvalue(), compresslevel=6, mtime=0))


def _write_gene_tables(rng, root: Path, genes: pd.DataFrame, cells) -> None:
    chroms = list(CHROMOSOMES)
    # fold_k (k = 1..12): valid and test are each a pair of chromosomes, rotating; fold_11 is the paper's
    folds = {}
    for k in range(1, _FOLDS + 1):
        if k == 11:
            valid, test = {"chr3", "chr21"}, {"chr22", "chrX"}
        else:
            i = (k - 1) % len(chroms)
            valid = {chroms[i], chroms[(i + 3) % len(chroms)]}
            test = {chroms[(i + 1) % len(chroms)], chroms[(i + 4) % len(chroms)]}
        folds[f"fold_{k}"] = np.where(
            genes["chrom"].isin(valid), "valid", np.where(genes["chrom"].isin(test), "test", "train")
        )
    u = rng.random(len(genes))
    folds["fold_enformer"] = np.where(u < 0.1, "valid", np.where(u < 0.2, "test", "train"))
    split = pd.DataFrame({"ENSID": genes["gene_id"], "chrom": genes["chrom"], **folds, "Gene name": genes["gene_name"]})
    _atomic_text(root / SPLIT_CSV, split.to_csv(index=False, lineterminator="\n"))

    n = len(genes)
    feats = {
        "UTR5LEN_log10zscore": rng.normal(0, 1, n),
        "CDSLEN_log10zscore": rng.normal(0, 1, n),
        "INTRONLEN_log10zscore": rng.normal(0, 1, n),
        "UTR3LEN_log10zscore": rng.normal(0, 1, n),
        "UTR5GC": rng.uniform(0.35, 0.8, n),
        "CDSGC": rng.uniform(0.35, 0.7, n),
        "UTR3GC": rng.uniform(0.3, 0.6, n),
        "ORFEXONDENSITY": rng.uniform(0.05, 0.6, n),
    }
    # EPInformer's layout: chrom (no "chr"), TSS, gene_id, Gene name, Gene description, the 8 features
    hl = pd.DataFrame({"chrom": genes["chrom"].str.removeprefix("chr"), "TSS": genes["tss"],
                       "gene_id": genes["gene_id"], "Gene name": genes["gene_name"],
                       "Gene description": "synthetic gene"})
    for name in HALFLIFE_FEATURES:
        hl[name] = np.round(feats[name], 6)
    _atomic_text(root / HALFLIFE_CSV, hl.to_csv(index=False, lineterminator="\n", float_format="%.6f"))


# ---------------------------------------------------------------- per cell line


def _cell_state(rng, genes: pd.DataFrame, n_runs) -> dict:
    """Domain states, promoter acetylation, expression and per-base signals of one cell line."""
    state = {"h3k27ac": {}, "dnase": {}, "hic_pixels": {}}
    z = np.zeros(len(genes))
    for chrom, (size, _, _) in CHROMOSOMES.items():
        # chromatin domains: piecewise-constant background state z (the confounder)
        edges = [0]
        while edges[-1] < size:
            edges.append(edges[-1] + int(rng.integers(20_000, 80_000)))
        edges[-1] = size
        edges = np.array(edges)
        z_dom = rng.uniform(0.0, 1.5, len(edges) - 1)
        sel = (genes["chrom"] == chrom).to_numpy()
        tss = genes["tss"].to_numpy()[sel]
        z[sel] = z_dom[np.searchsorted(edges, tss, side="right") - 1]
        state.setdefault("domains", {})[chrom] = (edges, z_dom)
    a = np.clip(0.4 * z + rng.uniform(0.0, 1.0, len(genes)), 0.0, None)
    y = 0.2 * genes["motif_count"].to_numpy() + 0.8 * a + 0.6 * z + rng.normal(0, 0.15, len(genes))
    y = np.clip(y, 0.0, 3.3)
    state["cage"] = np.round(10.0**y - 1.0, 3)
    state["a"], state["z"] = a, z

    for chrom, (size, _, _) in CHROMOSOMES.items():
        sel = (genes["chrom"] == chrom).to_numpy()
        tss = genes["tss"].to_numpy()[sel]
        edges, z_dom = state["domains"][chrom]
        nstep = -(-size // _STEP)
        centre = np.arange(nstep) * _STEP + _STEP / 2
        zstep = z_dom[np.minimum(np.searchsorted(edges, centre, side="right") - 1, len(z_dom) - 1)]
        k27 = 0.3 + 0.25 * rng.gamma(2.0, 0.5, nstep)
        dnase = (0.2 + 0.15 * rng.gamma(2.0, 0.5, nstep)) * (1.0 + 0.8 * zstep)
        for t, ag, zg in zip(tss, a[sel], z[sel]):
            lo, hi = max(0, (t - 2000) // _STEP), min(nstep, (t + 2000) // _STEP + 1)
            x = centre[lo:hi] - (t + rng.integers(-100, 100))
            k27[lo:hi] += 6.0 * ag * np.exp(-0.5 * (x / 300.0) ** 2)
            x = centre[lo:hi] - t
            dnase[lo:hi] += 3.0 * (0.3 * ag + zg) * np.exp(-0.5 * (x / 150.0) ** 2)
        # distal enhancer-like peaks with no effect on expression
        for _ in range(size // 20_000):
            c = rng.integers(0, nstep)
            lo, hi = max(0, c - 40), min(nstep, c + 40)
            bump = np.exp(-0.5 * ((np.arange(lo, hi) - c) / 10.0) ** 2)
            k27[lo:hi] += 4.0 * rng.random() * bump
            dnase[lo:hi] += 2.0 * rng.random() * bump
        gaps = np.zeros(nstep, dtype=bool)  # no data: N runs and a few random holes
        for s, e in n_runs[chrom]:
            gaps[s // _STEP : -(-e // _STEP)] = True
        for _ in range(4):
            c = int(rng.integers(0, nstep - 40))
            gaps[c : c + int(rng.integers(8, 40))] = True
        state["h3k27ac"][chrom] = np.where(gaps, np.nan, np.round(k27, 3)).astype(np.float32)
        state["dnase"][chrom] = np.where(gaps, np.nan, np.round(dnase, 3)).astype(np.float32)
        state["hic_pixels"][chrom] = _hic_pixels(rng, size, edges, z_dom, tss)
    # promoter H3K27ac / DNase means over TSS +-500 (NaN as 0), reported RPM-like in the GeneList
    for mark in ("h3k27ac", "dnase"):
        means = np.zeros(len(genes))
        for chrom, (size, _, _) in CHROMOSOMES.items():
            sel = np.flatnonzero((genes["chrom"] == chrom).to_numpy())
            per_base = np.nan_to_num(np.repeat(state[mark][chrom], _STEP)[:size])
            for i in sel:
                t = int(genes["tss"].iat[i])
                means[i] = per_base[max(0, t - 500) : t + 500].sum() / 1000.0
        state[f"{mark}_tss_mean"] = means
    return state


def _hic_pixels(rng, size: int, edges, z_dom, tss) -> pd.DataFrame:
    """Upper-triangle 5 kb pixels: Poisson counts around 60 * (d + 1)^-0.87, scaled by
    (1 + 0.7 z) of both bins and by 1.5 within one domain; two gene bins per chromosome lose
    all contacts (unmappable), so their genes fail the Hi-C QC."""
    nb = -(-size // HIC_RESOLUTION)
    centre = np.arange(nb) * HIC_RESOLUTION + HIC_RESOLUTION / 2
    dom = np.minimum(np.searchsorted(edges, centre, side="right") - 1, len(z_dom) - 1)
    zb = z_dom[dom]
    i, j = np.triu_indices(nb)
    mean = 60.0 * (j - i + 1.0) ** -0.87 * (1 + 0.7 * zb[i]) * (1 + 0.7 * zb[j])
    mean *= np.where(dom[i] == dom[j], 1.5, 1.0)
    count = rng.poisson(mean)
    dropped = rng.choice(np.unique(tss // HIC_RESOLUTION), size=2, replace=False)
    keep = (count > 0) & ~np.isin(i, dropped) & ~np.isin(j, dropped)
    return pd.DataFrame({"bin1": i[keep], "bin2": j[keep], "count": count[keep].astype(np.int32)})


# ---------------------------------------------------------------- writers


def _ensembl(chrom: str) -> str:
    return chrom[3:] if chrom.startswith("chr") else chrom


def _write_bigwig(path: Path, signal: dict, *, rename: bool = False) -> None:
    """bedGraph-like bigWig: runs of equal value (25 bp steps merged), no entries where NaN."""
    import pyBigWig

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    bw = pyBigWig.open(str(tmp), "w")
    names = {c: (_ensembl(c) if rename else c) for c in CHROMOSOMES}
    bw.addHeader([(names[c], CHROMOSOMES[c][0]) for c in CHROMOSOMES], maxZooms=4)
    for chrom, (size, _, _) in CHROMOSOMES.items():
        v = signal[chrom]
        starts = np.arange(len(v), dtype=np.int64) * _STEP
        # merge runs of equal values; NaN breaks runs and is skipped
        change = np.ones(len(v), dtype=bool)
        change[1:] = ~(v[1:] == v[:-1])
        first = np.flatnonzero(change)
        ends = np.append(starts[first[1:]], size)
        vals = v[first]
        ok = ~np.isnan(vals)
        bw.addEntries(
            [names[chrom]] * int(ok.sum()),
            starts[first][ok].tolist(),
            ends=np.minimum(ends[ok], size).tolist(),
            values=vals[ok].astype(float).tolist(),
        )
    bw.close()
    os.replace(tmp, path)


def _footprints(rng, genes: pd.DataFrame) -> dict[str, np.ndarray]:
    """{chrom: (k, 2) int64 [start, end)} DNase-footprint-like intervals of 8-30 bp, sorted by start:
    0-6 per gene within TSS +-600 (some overlapping), one at each chromosome's first base."""
    out = {}
    for chrom, (size, _, _) in CHROMOSOMES.items():
        tss = genes.loc[genes["chrom"] == chrom, "tss"].to_numpy()
        k = rng.integers(0, 7, len(tss))
        starts = np.repeat(tss, k) + rng.integers(-600, 600, int(k.sum()))
        starts = np.clip(np.append(starts, 0), 0, size - 31)
        iv = np.column_stack([starts, starts + rng.integers(8, 31, len(starts))]).astype(np.int64)
        out[chrom] = iv[np.lexsort((iv[:, 1], iv[:, 0]))]
    return out


def write_bigbed(path, chrom_sizes: dict, intervals: dict, *, items_per_block: int = 256) -> None:
    """A BED4 bigBed (UCSC bbi format, version 4, uncompressed blocks, no zoom levels) that pyBigWig reads.

    chrom_sizes {chrom: length}; intervals {chrom: (k, 2) int [start, end) sorted by start}; each record
    is named ``fp<i>``. pyBigWig reads bigBed but cannot write it, and no UCSC tool is installed here.
    """
    import struct

    names = sorted(chrom_sizes)  # the chromosome B+ tree is searched by name: ids in sorted order
    key_size = max(len(n) for n in names)
    chrom_tree = struct.pack("<IIIIQQ", 0x78CA8C91, len(names), key_size, 8, len(names), 0)
    chrom_tree += struct.pack("<BBH", 1, 0, len(names))
    for i, name in enumerate(names):
        chrom_tree += name.encode().ljust(key_size, b"\0") + struct.pack("<II", i, chrom_sizes[name])
    header_size, data_start = 64, 64 + len(chrom_tree)
    blocks, leaves, n_items, offset = [], [], 0, data_start + 8
    for i, name in enumerate(names):
        iv = np.asarray(intervals.get(name, np.zeros((0, 2))), dtype=np.int64).reshape(-1, 2)
        for b0 in range(0, len(iv), items_per_block):
            part = iv[b0 : b0 + items_per_block]
            block = b"".join(struct.pack("<III", i, int(s), int(e)) + f"fp{n_items + j}".encode() + b"\0"
                             for j, (s, e) in enumerate(part))
            leaves.append(struct.pack("<IIIIQQ", i, int(part[:, 0].min()), i, int(part[:, 1].max()), offset, len(block)))
            blocks.append(block)
            offset += len(block)
            n_items += len(part)
    index_start = offset
    first, last = struct.unpack("<IIIIQQ", leaves[0]), struct.unpack("<IIIIQQ", leaves[-1])
    index = struct.pack("<IIQIIIIQII", 0x2468ACE0, max(len(leaves), 1), len(leaves), first[0], first[1],
                        last[2], last[3], index_start, items_per_block, 0)
    index += struct.pack("<BBH", 1, 0, len(leaves)) + b"".join(leaves)
    header = struct.pack("<IHHQQQHHQQIQ", 0x8789F2EB, 4, 0, header_size, data_start, index_start, 4, 4, 0, 0, 0, 0)
    # UCSC tools end every bbi file with its signature; readers check it to detect a truncated file
    _atomic_bytes(path, header + chrom_tree + struct.pack("<Q", n_items) + b"".join(blocks) + index
                  + struct.pack("<I", 0x8789F2EB))


def _write_cage_bigwig(path: Path, genes: pd.DataFrame, cage: np.ndarray) -> None:
    """CAGE counts spread evenly over the 16 bases [TSS - 8, TSS + 8), so that the sum over
    [TSS - 192, TSS + 192) equals the gene's CAGE value (up to float32 rounding)."""
    import pyBigWig

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    bw = pyBigWig.open(str(tmp), "w")
    bw.addHeader([(c, v[0]) for c, v in CHROMOSOMES.items()], maxZooms=4)
    for chrom in CHROMOSOMES:
        sel = np.flatnonzero((genes["chrom"] == chrom).to_numpy())
        if len(sel) == 0:
            continue
        tss = genes["tss"].to_numpy()[sel]
        starts = (tss[:, None] - 8 + np.arange(16)[None, :]).ravel()
        vals = np.repeat(cage[sel] / 16.0, 16)
        bw.addEntries([chrom] * len(starts), starts.tolist(), ends=(starts + 1).tolist(), values=vals.tolist())
    bw.close()
    os.replace(tmp, path)


def _write_hic(path: Path, pixels: dict, *, rename: bool = False) -> None:
    import hictkpy

    path.parent.mkdir(parents=True, exist_ok=True)
    names = {c: (_ensembl(c) if rename else c) for c in CHROMOSOMES}
    sizes = {names[c]: CHROMOSOMES[c][0] for c in CHROMOSOMES}
    frames = []
    for chrom, px in pixels.items():
        size = CHROMOSOMES[chrom][0]
        s1 = px["bin1"].to_numpy() * HIC_RESOLUTION
        s2 = px["bin2"].to_numpy() * HIC_RESOLUTION
        frames.append(
            pd.DataFrame(
                {
                    "chrom1": names[chrom],
                    "start1": s1,
                    "end1": np.minimum(s1 + HIC_RESOLUTION, size),
                    "chrom2": names[chrom],
                    "start2": s2,
                    "end2": np.minimum(s2 + HIC_RESOLUTION, size),
                    "count": px["count"].to_numpy(),
                }
            )
        )
    tmp = path.with_name(path.name + ".tmp.hic")
    if tmp.exists():
        tmp.unlink()  # hictkpy refuses to overwrite
    scratch = path.parent / ".hictk_tmp"
    scratch.mkdir(exist_ok=True)
    writer = hictkpy.hic.FileWriter(str(tmp), sizes, [HIC_RESOLUTION], assembly="synthetic", tmpdir=str(scratch))
    writer.add_pixels(pd.concat(frames, ignore_index=True))
    writer.finalize()
    del writer
    os.replace(tmp, path)
    shutil.rmtree(scratch, ignore_errors=True)


def _write_genelist(path: Path, genes: pd.DataFrame, state: dict) -> Path:
    """ABC GeneList.txt: gene body from a random length, RPM-like promoter H3K27ac and DHS."""
    lengths = 5000 + (np.arange(len(genes)) * 7919) % 60000
    plus = (genes["strand"] == "+").to_numpy()
    tss = genes["tss"].to_numpy()
    start = np.where(plus, tss, np.maximum(tss - lengths, 0))
    end = np.where(plus, tss + lengths, tss + 1)
    df = pd.DataFrame(
        {
            "chr": genes["chrom"],
            "start": start,
            "end": end,
            "name": genes["gene_name"],
            "score": 0,
            "strand": genes["strand"],
            "symbol": genes["gene_id"],
            "tss": tss,
            "H3K27ac.RPM.TSS1Kb": np.round(_RPM_PER_FOLD * state["h3k27ac_tss_mean"], 4),
            "DHS.RPM.TSS1Kb": np.round(_RPM_PER_FOLD * state["dnase_tss_mean"], 4),
        }
    )
    _atomic_text(path, df.to_csv(sep="\t", index=False, lineterminator="\n", float_format="%.4f"))
    return path


def _write_expression_csv(path: Path, genes: pd.DataFrame, cage: dict) -> None:
    df = pd.DataFrame({"ENSID": genes["gene_id"], "Gene name": genes["gene_name"], "chrom": genes["chrom"],
                       "TSS": genes["tss"]})
    for cell, values in cage.items():
        df[expression_column(cell)] = values
    _atomic_text(path, df.to_csv(index=False, lineterminator="\n", float_format="%.3f"))


def _write_manifest(root: Path) -> Path:
    files = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != "MANIFEST.json":
            files[rel] = {"md5": _md5(p), "size": p.stat().st_size}
    path = root / "MANIFEST.json"
    _write_json(path, {"files": files})
    return path


def _file_record(acc: str, path: Path) -> dict:
    return {"accession": acc, "path": str(path), "md5": _md5(path), "file_size": path.stat().st_size}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, obj) -> None:
    _atomic_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _atomic_text(path: Path, text: str) -> None:
    _atomic_bytes(path, text.encode())


def _atomic_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
