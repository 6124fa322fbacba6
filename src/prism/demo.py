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
the Xpresso-style CSV and promoter activity from an ABC GeneList; each also has an ABC run as a
zip laid out as Zenodo record 12738705's (the GeneList and an EnhancerPredictionsAllPutative
table whose elements are the planted promoter and distal peaks, see :func:`_abc_predictions`;
synthA's keyed by Ensembl ID as the real K562 / GM12878 runs, synthB's by gene symbol as
Seq2Exp's H1 run). synthC is the cell line added
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
import re
import shutil
import zipfile
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
#: the cell line whose mirror also carries a DNase-footprint bigBed (ENCODE-style, kind bigbed) and the
#: other extra signals of the paper's Appendix H (H3K4me3, ChIA-PET as bigWigs), like K562
FOOTPRINT_CELL = "synthA"
#: a cell line with signals but no expression at all: predictions only (no table can test on it)
UNMEASURED_CELL = "synthD"
#: the demo's Prism (config/demo.yaml architectures.prism.model, run_defaults.length): the size of the
#: "released" checkpoints and of the "pre-trained" Caduceus of the mirror's Hugging Face repositories
DEMO_PRISM = {"d_model": 16, "n_layer": 1, "d_state": 8, "d_conv": 4, "expand": 2, "confounder_width": 4,
              "center_len": 2000, "length": 200, "K": 2}
#: Hugging Face repositories of the mirror, at one pinned (made-up) commit; the cells are the folder names
#: the released checkpoints use for synthA and synthB, as the authors' use K562 and GM12878
HF_REVISION = "0d3e" * 10  # 40 hex digits, as a pinned commit
HF_RELEASED = {"repo": "yangyz1230/Prism", "cells": {"synthA": "K562", "synthB": "GM12878"}, "seeds": (2, 22)}
HF_CADUCEUS = {"repo": "kuleshov-group/caduceus-ph_seqlen-131k_d_model-256_n_layer-16"}
#: the demo's Seq2Exp-soft (config/demo.yaml architectures.seq2exp-soft.model, Table 4's length): the size of
#: the "released" Seq2Exp checkpoints, in the folders config/demo.yaml's weights.seq2exp-authors names
DEMO_SEQ2EXP = {"d_model": 16, "n_layer": 1, "gen_n_layer": 1, "d_state": 8, "d_conv": 4, "expand": 2,
                "center_len": 100, "length": 400}
HF_SEQ2EXP = {"repo": "xingyusu/GeneExp_Seq2Exp", "folder": "Seq2Exp-soft/{cell}/seed_{seed}",
              "cells": {"synthA": "K562"}, "seeds": (2,)}
#: the ENCODE-style hg38 blacklist of the mirror (BED.gz, as ENCFF356LFX)
BLACKLIST = "encode/files/ENCFFSYBL01/@@download/ENCFFSYBL01.bed.gz"
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
    "expression_column": str or None, "abc_zip": path or None, "abc_members": {"genelist",
    "predictions"} (paths inside the zip) or None}}; synthA's entry also has "footprints" (a bigBed,
    same record). ``MANIFEST.json`` lists every file with md5 and size.
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
        entry = {"genelist": None, "cage_bigwig": None, "expression_column": None, "abc_zip": None, "abc_members": None}
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
        if cell == FOOTPRINT_CELL:
            # own generator again: H3K4me3 (a sharp promoter mark following activity) and a noisy ChIA-PET signal
            for j, (mark, signal) in enumerate(_extra_marks(np.random.default_rng([seed, 4000 + ci]), genes, state)):
                acc = f"ENCFFSY{letter}{6 + j:03d}"
                path = root / "encode" / "files" / acc / "@@download" / f"{acc}.bigWig"
                _write_bigwig(path, signal)
                entry[mark] = _file_record(acc, path)
                _write_json(root / "encode" / "files" / acc / "metadata.json",
                            {"accession": acc, "md5sum": entry[mark]["md5"], "file_size": entry[mark]["file_size"],
                             "assembly": "GRCh38", "output_type": "fold change over control",
                             "file_format": "bigWig", "status": "released"})
        if cell in CSV_CELLS:
            entry["genelist"] = str(_write_genelist(root / "abc" / cell / "GeneList.txt", genes, state))
            entry["expression_column"] = expression_column(cell)
            # keyed as the real K562 / GM12878 runs (Ensembl IDs) for synthA, by gene symbol for synthB
            target = "gene_id" if cell == CSV_CELLS[0] else "gene_name"
            entry.update(_write_abc_zip(root, cell, genes, state, entry, target))
        else:
            path = root / "fantom5" / f"{cell}_CAGE.bw"
            _write_cage_bigwig(path, genes, state["cage"])
            entry["cage_bigwig"] = str(path)
        result["cells"][cell] = entry

    _write_expression_csv(root / EXPRESSION_CSV, genes, {c: expr_table[c] for c in cells if c in CSV_CELLS})
    result["unmeasured"] = _write_unmeasured_cell(root, seed, genes, n_runs)
    result["blacklist"] = str(_write_blacklist(root / BLACKLIST, np.random.default_rng([seed, 5000]), n_runs))
    result["huggingface"] = _write_huggingface(root / "huggingface", seed)
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
        state.setdefault("distal", {})[chrom] = distal = []  # their centre steps, for the ABC table
        for _ in range(size // 20_000):
            c = rng.integers(0, nstep)
            distal.append(int(c))
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


def _extra_marks(rng, genes: pd.DataFrame, state: dict):
    """(name, {chrom: per-step signal}) of H3K4me3 (promoter peaks scaled by activity a) and ChIA-PET (noise
    plus weak promoter peaks), with the same NaN gaps as the cell line's H3K27ac."""
    out = {"h3k4me3": {}, "chiapet": {}}
    for chrom, (size, _, _) in CHROMOSOMES.items():
        nstep = -(-size // _STEP)
        centre = np.arange(nstep) * _STEP + _STEP / 2
        sel = (genes["chrom"] == chrom).to_numpy()
        k4 = 0.2 + 0.1 * rng.gamma(2.0, 0.5, nstep)
        cp = 0.5 + 0.5 * rng.gamma(1.0, 1.0, nstep)
        for t, ag in zip(genes["tss"].to_numpy()[sel], state["a"][sel]):
            lo, hi = max(0, (t - 1500) // _STEP), min(nstep, (t + 1500) // _STEP + 1)
            x = centre[lo:hi] - t
            k4[lo:hi] += 8.0 * ag * np.exp(-0.5 * (x / 200.0) ** 2)
            cp[lo:hi] += 1.0 * ag * np.exp(-0.5 * (x / 600.0) ** 2)
        gaps = np.isnan(state["h3k27ac"][chrom])
        out["h3k4me3"][chrom] = np.where(gaps, np.nan, np.round(k4, 3)).astype(np.float32)
        out["chiapet"][chrom] = np.where(gaps, np.nan, np.round(cp, 3)).astype(np.float32)
    return list(out.items())


def _write_unmeasured_cell(root: Path, seed: int, genes: pd.DataFrame, n_runs) -> dict:
    """synthD: H3K27ac and DNase bigWigs and a .hic, but no CAGE anywhere (a cell line to predict for)."""
    rng = np.random.default_rng([seed, 6000])
    state = _cell_state(rng, genes, n_runs)
    entry = {}
    for j, mark in enumerate(("h3k27ac", "dnase")):
        acc = f"ENCFFSYD{j + 1:03d}"
        path = root / "encode" / "files" / acc / "@@download" / f"{acc}.bigWig"
        _write_bigwig(path, state[mark])
        entry[mark] = _file_record(acc, path)
        _write_json(root / "encode" / "files" / acc / "metadata.json",
                    {"accession": acc, "md5sum": entry[mark]["md5"], "file_size": entry[mark]["file_size"],
                     "assembly": "GRCh38", "output_type": "fold change over control", "file_format": "bigWig",
                     "status": "released"})
    acc = "4DNFISYNTHD1"
    path = root / "4dn" / "files-processed" / acc / "@@download" / f"{acc}.hic"
    _write_hic(path, state["hic_pixels"])
    entry["hic"] = _file_record(acc, path)
    _write_json(root / "4dn" / "files-processed" / acc / "metadata.json",
                {"accession": acc, "md5sum": entry["hic"]["md5"], "file_size": entry["hic"]["file_size"],
                 "status": "released"})
    return entry


def _write_blacklist(path: Path, rng, n_runs) -> Path:
    """ENCODE-style blacklist BED.gz (chrom, start, end, reason): each N run, plus a few short regions."""
    rows = []
    for chrom, (size, _, _) in CHROMOSOMES.items():
        for s, e in n_runs[chrom]:
            rows.append((chrom, s, e, "High Signal Region"))
        for _ in range(3):
            s = int(rng.integers(0, size - 2000))
            rows.append((chrom, s, s + int(rng.integers(200, 1500)), "Low Mappability"))
    rows.sort(key=lambda r: (list(CHROMOSOMES).index(r[0]), r[1]))
    text = "".join(f"{c}\t{s}\t{e}\t{why}\n" for c, s, e, why in rows)
    _atomic_bytes(path, gzip.compress(text.encode(), compresslevel=6, mtime=0))
    return path


def _hf_checkpoint(root: Path, rel_root: Path, repo: str, folder: str, name: str, ckpt: dict) -> str:
    """``ckpt`` saved as ``<rel_root>/<folder>/<name>`` of a Hugging Face-style repo, and listed there."""
    import torch

    path = rel_root / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    _atomic_bytes(path, buf.getvalue())
    _hf_listing(root, repo, folder, {f"{folder}/{name}": path})
    return str(path)


def _hf_listing(root: Path, repo: str, folder: str, files: dict[str, Path]) -> None:
    """The tree listing of one folder as Hugging Face's API gives it (prism.download.resolve_hf_files)."""
    entries = []
    for rel, path in files.items():
        data = path.read_bytes()
        entries.append({"type": "file", "path": rel, "size": len(data), "oid": hashlib.sha1(data).hexdigest(),
                        "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}})
    listing = root / "api" / "models" / repo / "tree" / HF_REVISION / folder if folder else \
        root / "api" / "models" / repo / "tree" / HF_REVISION
    _write_json(listing, entries)


def _write_huggingface(root: Path, seed: int) -> dict:
    """Three Hugging Face repositories in the real layout (resolve/<commit>/<path> and the tree API):
    "released" Prism and Seq2Exp checkpoints in their authors' Lightning layouts (random weights of the
    demo's size) and a "pre-trained" Caduceus (config.json + model.safetensors), as kuleshov-group
    publishes them."""
    import torch
    from safetensors.torch import save_file

    from .model import CaduceusBackbone, ModelConfig, PrismModel
    from .released import export_reference_state_dict

    d = DEMO_PRISM
    out = {"revision": HF_REVISION, "released": {}, "caduceus": None}
    rel_root = root / HF_RELEASED["repo"] / "resolve" / HF_REVISION
    for cell, theirs in HF_RELEASED["cells"].items():
        for s in HF_RELEASED["seeds"]:
            torch.manual_seed(seed * 1000 + s)
            model = PrismModel(ModelConfig(**{k: d[k] for k in ("d_model", "n_layer", "d_state", "d_conv", "expand",
                                                                 "confounder_width", "center_len")}, K=d["K"]))
            hparams = {"train": {"seed": s}, "dataset": {"cell_type": theirs, "seq_range": d["length"]},
                       "task": {"loss": {"intervention_loss_weight": 1.0, "uniform_loss_weight": 1.0}},
                       "model": {"config": {"d_model": d["d_model"], "n_layer": d["n_layer"], "center_len": 2000,
                                            "signal_size": 3, "cnn_dim": d["confounder_width"], "n_context": d["K"],
                                            "intervention_loss_weight": 1.0,
                                            "ssm_cfg": {"d_state": d["d_state"], "d_conv": d["d_conv"],
                                                        "expand": d["expand"]}}}}
            ckpt = {"epoch": 3, "global_step": 120, "pytorch-lightning_version": "1.8.6",
                    "state_dict": export_reference_state_dict(model.state_dict()), "hyper_parameters": hparams}
            folder = f"ckpt/{theirs}/seed_{s}"
            name = f"mse-2025-01-{20 + len(str(s))}_00-00-00+Fold11.ckpt"  # a date in the name, as theirs
            out["released"][(cell, s)] = _hf_checkpoint(root, rel_root, HF_RELEASED["repo"], folder, name, ckpt)
    torch.manual_seed(seed + 77)
    backbone = CaduceusBackbone(d["d_model"], d["n_layer"], d_state=d["d_state"], d_conv=d["d_conv"],
                                expand=d["expand"])
    state = {"caduceus.backbone.embeddings.word_embeddings.weight": torch.randn(16, d["d_model"]) * 0.02}
    state.update({f"caduceus.backbone.{k}": v.clone() for k, v in backbone.state_dict().items()
                  if ".mamba_rev.in_proj." not in k and ".mamba_rev.out_proj." not in k})  # tied: stored once
    cad = root / HF_CADUCEUS["repo"] / "resolve" / HF_REVISION
    cad.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["CaduceusForMaskedLM"], "model_type": "caduceus", "d_model": d["d_model"],
              "n_layer": d["n_layer"], "vocab_size": 16, "pad_vocab_size_multiple": 8, "rms_norm": True,
              "residual_in_fp32": False, "fused_add_norm": True, "norm_epsilon": 1e-5,
              "ssm_cfg": {"d_state": d["d_state"], "d_conv": d["d_conv"], "expand": d["expand"], "dt_rank": "auto",
                          "conv_bias": True, "bias": False},
              "bidirectional": True, "bidirectional_strategy": "add", "bidirectional_weight_tie": True,
              "rcps": False}
    _write_json(cad / "config.json", config)
    tmp = cad / "model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, cad / "model.safetensors")
    _hf_listing(root, HF_CADUCEUS["repo"], "", {"config.json": cad / "config.json",
                                                "model.safetensors": cad / "model.safetensors"})
    out["caduceus"] = str(cad)
    out["seq2exp"] = _write_seq2exp_released(root, seed)
    return out


def _write_seq2exp_released(root: Path, seed: int) -> dict:
    """"Released" Seq2Exp-soft checkpoints as Seq2Exp's train.py saves them: GeneBiMambaMIRNP's state dict
    under the Lightning module's ``model.`` and the Hydra config as hyper_parameters (plain dicts here, with
    the config's own interpolations), at the demo's size with random weights."""
    import torch

    from .model.seq2exp import REFERENCE_DEFAULTS, REFERENCE_SIGNALS, build, ours_to_reference_state_dict
    from .runs import ModelSpec

    d = DEMO_SEQ2EXP
    hp = {"d_model": d["d_model"], "n_layer": d["n_layer"], "gen_n_layer": d["gen_n_layer"], "d_state": d["d_state"],
          "d_conv": d["d_conv"], "expand": d["expand"], "center_len": d["center_len"], "mask": "learned",
          "kl_loss_weight": 0.01, "prior_scale_factor": 10.0, "prior_beta": {"h3k27ac": 1.5, "dnase": 0.2, "hic": 1.0},
          "prior_weight": {"h3k27ac": 2, "dnase": 2, "hic": 1}, "marginal_mean": 0.1, "marginal_scale": 10.0,
          "beta_min": 1.0, "z_scale": 1.0, "decouple_x": True, "sample_threshold": 0.5, "post_hard_dist": False,
          "test_hard": False, "enc_prd_ps": False, "pos_enc": False, "init_n_layer": 64}
    theirs_cfg = REFERENCE_DEFAULTS["model"]["config"]
    model_config = {**theirs_cfg, "d_model": d["d_model"], "enc_n_layer": d["n_layer"],
                    "gen_n_layer": "${.enc_n_layer}", "center_len": d["center_len"], "seq_range": "${dataset.seq_range}",
                    "ssm_cfg": {**theirs_cfg["ssm_cfg"], "d_state": d["d_state"], "d_conv": d["d_conv"],
                                "expand": d["expand"]}}
    out = {}
    rel_root = root / HF_SEQ2EXP["repo"] / "resolve" / HF_REVISION
    for cell, theirs in HF_SEQ2EXP["cells"].items():
        for s in HF_SEQ2EXP["seeds"]:
            torch.manual_seed(seed * 1000 + 500 + s)
            model = build(hp, ModelSpec(length=d["length"], signals=REFERENCE_SIGNALS), 9)
            hparams = {"train": {"seed": s, "monitor": "val/mse", "single_CV": 11},
                       "dataset": {"_name_": "promo_enhan_inter", "cell_type": theirs, "expr_type": "CAGE",
                                   "seq_range": d["length"]},
                       "task": {"_name_": "extract_rationale",
                                "loss": {"_name_": "extract_rationale_loss", "select_weight": 0.0,
                                         "continuity_weight": 0.0, "bio_mask_weight": 0.0, "kl_loss_weight": 0.01}},
                       "model": {"_name_": "BiMambaMIRNP", "config": model_config}}
            ckpt = {"epoch": 2, "global_step": 90, "pytorch-lightning_version": "1.8.6",
                    "state_dict": ours_to_reference_state_dict(model.state_dict(), lightning_prefix=True),
                    "hparams_name": "config", "hyper_parameters": hparams}
            folder = HF_SEQ2EXP["folder"].format(cell=theirs, seed=s)
            name = "mse-2025-02-03_00-00-00+Fold11.ckpt"  # their ModelCheckpoint's "<monitor>-<date>+Fold11"
            out[(cell, s)] = _hf_checkpoint(root, rel_root, HF_SEQ2EXP["repo"], folder, name, ckpt)
    return out


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
    write_hic(tmp, sizes, HIC_RESOLUTION, pd.concat(frames, ignore_index=True), assembly="synthetic")
    os.replace(tmp, path)


def write_hic(path, sizes: dict, resolution: int, pixels: pd.DataFrame, *, assembly: str = "unknown") -> None:
    """A real .hic of ``pixels`` (hictkpy's bg2 columns chrom1, start1, end1, chrom2, start2, end2, count),
    written in a child process. hictkpy 1.4's writer leaves a thread behind that keeps one core busy for the
    rest of the process's life, even after ``finalize()``: in a test session it halves a 2-core machine."""
    import pickle
    import subprocess
    import sys

    src = str(Path(__file__).resolve().parents[1])  # the child imports this package as the parent does
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    code = "import pickle, sys; from prism.demo import _write_hic_here; _write_hic_here(*pickle.load(sys.stdin.buffer))"
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       input=pickle.dumps((str(path), dict(sizes), int(resolution), pixels, assembly)))
    if p.returncode != 0:
        last = (p.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"{path}: hictkpy could not write the .hic: {last}")


def _write_hic_here(path: str, sizes: dict, resolution: int, pixels: pd.DataFrame, assembly: str) -> None:
    import hictkpy

    scratch = Path(path).parent / f".hictk_tmp.{os.getpid()}"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        writer = hictkpy.hic.FileWriter(path, sizes, [resolution], assembly=assembly, tmpdir=str(scratch))
        writer.add_pixels(pixels)
        writer.finalize()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _gene_bodies(genes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of each gene body: 5-65 kb from the TSS downstream on the gene's strand."""
    lengths = 5000 + (np.arange(len(genes)) * 7919) % 60000
    plus = (genes["strand"] == "+").to_numpy()
    tss = genes["tss"].to_numpy()
    return np.where(plus, tss, np.maximum(tss - lengths, 0)), np.where(plus, tss + lengths, tss + 1)


def _genelist_text(genes: pd.DataFrame, state: dict) -> str:
    """ABC GeneList.txt: gene body from a random length, RPM-like promoter H3K27ac and DHS."""
    tss = genes["tss"].to_numpy()
    start, end = _gene_bodies(genes)
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
    return df.to_csv(sep="\t", index=False, lineterminator="\n", float_format="%.4f")


def _write_genelist(path: Path, genes: pd.DataFrame, state: dict) -> Path:
    _atomic_text(path, _genelist_text(genes, state))
    return path


#: Zenodo record of the ABC runs (EPInformer's data); the demo's zips sit at the same relative path
ABC_RECORD = "zenodo/records/12738705/files"
#: element-gene pairs the demo's ABC table lists: within this distance of the TSS (the real runs
#: use a 5 Mb window; 110 kb keeps the mirror small and still reaches past EPInformer's 100 kb)
ABC_WINDOW = 110_000
#: half-width of an ABC candidate region around a DNase summit (ABC: 500 bp regions)
_ABC_HALF = 250
#: ABC calls a gene expressed, without expression data, from its promoter activity quantile
_ABC_EXPRESSED_QUANTILE = 0.4
#: AppleDouble stub that macOS's zip adds under __MACOSX/ (the real ABC zips carry one)
_APPLEDOUBLE = bytes.fromhex("00051607") + bytes.fromhex("00020000") + b"Mac OS X        " + bytes(2)


def abc_run_name(cell: str, dnase_accession: str, hic_accession: str) -> str:
    """Top folder (and zip name) of a cell's ABC run, as Zenodo record 12738705 names them."""
    return f"{cell}_DNase_{dnase_accession}_hic_{hic_accession}_1MB_ABC_nominated"


def _write_abc_zip(root: Path, cell: str, genes: pd.DataFrame, state: dict, entry: dict, target: str) -> dict:
    """The cell's ABC run as a zip laid out as Zenodo record 12738705's.

    Members: ``<run>/DNase_<acc>_Neighborhoods/GeneList.txt`` (the same bytes as the plain GeneList),
    ``<run>/Gene-enhancer links/EnhancerPredictionsAllPutative.txt.gz`` (ABC v0.2's columns, expressed
    genes only, TargetGene = the genes' `target` column) and the ``__MACOSX/._<run>`` stub, plus
    directory entries; fixed timestamps, so the bytes are deterministic.
    Returns {"abc_zip": path, "abc_members": {"genelist", "predictions"}}.
    """
    run = abc_run_name(cell, entry["dnase"]["accession"], entry["hic"]["accession"])
    genelist = f"{run}/DNase_{entry['dnase']['accession']}_Neighborhoods/GeneList.txt"
    predictions = f"{run}/Gene-enhancer links/EnhancerPredictionsAllPutative.txt.gz"
    table = _abc_predictions(cell, genes, state, target)
    text = _tsv_text(table)
    members = [
        (f"{run}/", None),
        (f"{run}/DNase_{entry['dnase']['accession']}_Neighborhoods/", None),
        (genelist, _genelist_text(genes, state).encode()),
        (f"{run}/Gene-enhancer links/", None),
        (predictions, gzip.compress(text.encode(), compresslevel=6, mtime=0)),
        (f"__MACOSX/._{run}", _APPLEDOUBLE),
    ]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3  # unix
            if data is None:
                info.external_attr = (0o40755 << 16) | 0x10
                zf.writestr(info, b"")
            else:
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
    path = root / ABC_RECORD / f"{run}.zip"
    _atomic_bytes(path, buf.getvalue())
    return {"abc_zip": str(path), "abc_members": {"genelist": genelist, "predictions": predictions}}


def _tsv_text(df: pd.DataFrame) -> str:
    """The bytes ``df.to_csv(sep="\\t", float_format="%.6f", na_rep="NaN")`` writes (ABC's format), 4x faster:
    one %-format per row instead of one formatter call per value."""
    fmt = "\t".join("%.6f" if df[c].dtype.kind == "f" else "%s" for c in df.columns) + "\n"
    body = "".join(fmt % row for row in zip(*(df[c].to_numpy().tolist() for c in df.columns)))
    return "\t".join(df.columns) + "\n" + re.sub(r"(?<=\t)nan(?=[\t\n])", "NaN", body)


def _quantile(x: np.ndarray) -> np.ndarray:
    """Rank quantile in (0, 1] of each value (ties share the highest rank), as ABC's *.quantile columns."""
    return pd.Series(x).rank(method="max", pct=True).to_numpy()


def _abc_predictions(cell: str, genes: pd.DataFrame, state: dict, target: str) -> pd.DataFrame:
    """EnhancerPredictionsAllPutative rows for the expressed genes, values from the planted signals.

    Candidate regions (ABC: 500 bp around DNase summits, merged, plus promoters): 500 bp at every TSS
    (class ``promoter``) and at every planted distal peak not overlapping one (``genic`` inside a gene
    body, else ``intergenic``). *.RPM = 3 x (summed fold change over the region) / 1000, the GeneList's
    scale; activity_base = sqrt(DHS x H3K27ac); hic_contact = the 5 kb pixel between the TSS's and the
    region midpoint's bins over the TSS bin's row sum, its own bin taken as the larger neighbour (ABC's
    diagonal correction), so rows sum to about 1 as KR-normalised ones; then ABC's Hi-C QC, power-law
    pseudocount and scores (gamma 0.87 both: no rescaling).
    """
    from .preprocess import HIC_PSEUDOCOUNT_DISTANCE, powerlaw

    body_start, body_end = _gene_bodies(genes)
    per_base = {}
    frames = []
    for chrom, (size, _, _) in CHROMOSOMES.items():
        gi = np.flatnonzero((genes["chrom"] == chrom).to_numpy())
        if len(gi) == 0:
            continue
        tss = genes["tss"].to_numpy()[gi]
        prom = np.column_stack([np.maximum(tss - _ABC_HALF, 0), np.minimum(tss + _ABC_HALF, size)])
        centre = np.array(state["distal"][chrom], dtype=np.int64) * _STEP + _STEP // 2
        distal = np.column_stack([np.maximum(centre - _ABC_HALF, 0), np.minimum(centre + _ABC_HALF, size)])
        kept = []  # distal regions not overlapping a promoter or an earlier region
        for s, e in distal[np.argsort(distal[:, 0], kind="stable")]:
            hits_prom = ((prom[:, 0] < e) & (prom[:, 1] > s)).any()
            if not hits_prom and not any(ks < e and ke > s for ks, ke in kept):
                kept.append((int(s), int(e)))
        distal = np.array(kept, dtype=np.int64).reshape(-1, 2)
        genic = np.array([((body_start[gi] <= s) & (body_end[gi] > s)).any() for s, _ in distal], dtype=bool)
        regions = np.concatenate([prom, distal])
        klass = np.array(["promoter"] * len(prom) + np.where(genic, "genic", "intergenic").tolist())
        order = np.argsort(regions[:, 0], kind="stable")
        regions, klass = regions[order], klass[order]
        rpm = {}
        for mark in ("dnase", "h3k27ac"):
            if (mark, chrom) not in per_base:
                per_base[mark, chrom] = np.nan_to_num(np.repeat(state[mark][chrom], _STEP)[:size])
            csum = np.concatenate([[0.0], np.cumsum(per_base[mark, chrom], dtype=np.float64)])
            rpm[mark] = _RPM_PER_FOLD * (csum[regions[:, 1]] - csum[regions[:, 0]]) / 1000.0
        # Hi-C: symmetric count matrix of the planted pixels, diagonal = larger neighbour
        px = state["hic_pixels"][chrom]
        nb = -(-size // HIC_RESOLUTION)
        mat = np.zeros((nb, nb))
        mat[px["bin1"].to_numpy(), px["bin2"].to_numpy()] = px["count"].to_numpy()
        mat = np.maximum(mat, mat.T)
        np.fill_diagonal(mat, 0.0)
        neighbour = np.maximum(np.r_[mat[np.arange(1, nb), np.arange(0, nb - 1)], 0.0],
                               np.r_[0.0, mat[np.arange(0, nb - 1), np.arange(1, nb)]])
        mat[np.arange(nb), np.arange(nb)] = neighbour
        rowsum = mat.sum(axis=1)
        mid = (regions[:, 0] + regions[:, 1]) / 2.0
        dist = np.abs(mid[None, :] - tss[:, None])  # (genes, regions)
        pg, pr = np.nonzero(dist < ABC_WINDOW)  # pairs, gene-major, regions by start
        tb, eb = tss[pg] // HIC_RESOLUTION, np.floor(mid[pr] / HIC_RESOLUTION).astype(np.int64)
        contact = np.divide(mat[tb, eb], rowsum[tb], out=np.zeros(len(pg)), where=rowsum[tb] > 0)
        names = np.array([f"{k}|{chrom}:{s}-{e}" for k, (s, e) in zip(klass, regions)], dtype=object)
        frames.append(pd.DataFrame({
            "chr": chrom, "start": regions[pr, 0], "end": regions[pr, 1], "name": names[pr],
            "class": klass[pr], "_g": gi[pg], "distance": dist[pg, pr], "hic_contact": contact,
            "DHS.RPM": rpm["dnase"][pr], "H3K27ac.RPM": rpm["h3k27ac"][pr],
        }))
    pred = pd.concat(frames, ignore_index=True)
    # ABC quantiles are over all candidate regions; each region is counted once
    region_key = pred["chr"] + ":" + pred["start"].astype(str)
    first = ~region_key.duplicated()
    for col in ("DHS.RPM", "H3K27ac.RPM"):
        q = pd.Series(_quantile(pred.loc[first, col].to_numpy()), index=region_key[first].to_numpy())
        pred[col + ".quantile"] = region_key.map(q).to_numpy()
    pred["normalized_dhs"] = pred["DHS.RPM"]
    pred["normalized_h3K27ac"] = pred["H3K27ac.RPM"]
    pred["activity_base"] = np.sqrt(pred["normalized_dhs"] * pred["normalized_h3K27ac"])

    g = pred["_g"].to_numpy()
    prom_h = _RPM_PER_FOLD * state["h3k27ac_tss_mean"]
    prom_d = _RPM_PER_FOLD * state["dnase_tss_mean"]
    prom_q = _quantile(np.sqrt(np.round(prom_h, 4) * np.round(prom_d, 4)))
    body = {}
    for mark in ("dnase", "h3k27ac"):
        vals = np.zeros(len(genes))
        for i, (chrom, s, e) in enumerate(zip(genes["chrom"], body_start, body_end)):
            vals[i] = _RPM_PER_FOLD * per_base[mark, chrom][s:e].sum() / 1000.0 if (mark, chrom) in per_base else 0.0
        body[mark] = vals
    tss_all = genes["tss"].to_numpy()
    genes_cols = {
        "TargetGene": genes[target].to_numpy()[g],
        "TargetGeneTSS": tss_all[g],
        "TargetGeneExpression": np.nan,
        "TargetGenePromoterActivityQuantile": prom_q[g],
        "TargetGeneIsExpressed": prom_q[g] >= _ABC_EXPRESSED_QUANTILE,
        "Gene.DHS.RPM": body["dnase"][g],
        "Gene.DHS.RPM.quantile": _quantile(body["dnase"])[g],
        "Gene.H3K27ac.RPM": body["h3k27ac"][g],
        "Gene.H3K27ac.RPM.quantile": _quantile(body["h3k27ac"])[g],
        "Gene.H3K27ac.RPM.TSS1Kb": np.round(prom_h, 4)[g],
        "Gene.H3K27ac.RPM.quantile.TSS1Kb": _quantile(np.round(prom_h, 4))[g],
        "Gene.DHS.RPM.TSS1Kb": np.round(prom_d, 4)[g],
        "Gene.DHS.RPM.quantile.TSS1Kb": _quantile(np.round(prom_d, 4))[g],
    }
    for k, v in genes_cols.items():
        pred[k] = v
    pred["isSelfPromoter"] = ((pred["class"] == "promoter") & (pred["start"] - 500 < pred["TargetGeneTSS"])
                              & (pred["end"] + 500 > pred["TargetGeneTSS"]))
    pred["powerlaw_contact"] = powerlaw(pred["distance"].to_numpy())
    pred["powerlaw_contact_reference"] = powerlaw(pred["distance"].to_numpy())
    # ABC's Hi-C QC: a gene whose self-promoter contacts sum below 0.01 gets NaN contacts
    qc = pred.loc[pred["isSelfPromoter"]].groupby("_g")["hic_contact"].sum()
    pred.loc[pred["_g"].isin(qc.index[qc < 0.01]), "hic_contact"] = np.nan
    pred["hic_contact_pl_scaled"] = pred["hic_contact"] * pred["powerlaw_contact_reference"] / pred["powerlaw_contact"]
    pred["hic_pseudocount"] = np.minimum(pred["powerlaw_contact"], powerlaw(HIC_PSEUDOCOUNT_DISTANCE))
    pred["hic_contact_pl_scaled_adj"] = pred["hic_contact_pl_scaled"] + pred["hic_pseudocount"]
    for prefix, contact in (("ABC", "hic_contact_pl_scaled_adj"), ("powerlaw", "powerlaw_contact_reference")):
        num = pred["activity_base"] * pred[contact]
        pred[f"{prefix}.Score.Numerator"] = num
        pred[f"{prefix}.Score"] = num / num.groupby(pred["_g"]).transform("sum")
    pred["CellType"] = cell
    pred = pred[pred["TargetGeneIsExpressed"]]
    pred = pred.sort_values(["_g", "start"], kind="stable")
    columns = ["chr", "start", "end", "name", "class", "normalized_dhs", "normalized_h3K27ac", "activity_base",
               "DHS.RPM", "DHS.RPM.quantile", "H3K27ac.RPM", "H3K27ac.RPM.quantile"] + list(genes_cols) + [
               "distance", "isSelfPromoter", "powerlaw_contact", "powerlaw_contact_reference", "hic_contact",
               "hic_contact_pl_scaled", "hic_pseudocount", "hic_contact_pl_scaled_adj", "ABC.Score.Numerator",
               "ABC.Score", "powerlaw.Score.Numerator", "powerlaw.Score", "CellType"]
    return pred[columns].reset_index(drop=True)


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
