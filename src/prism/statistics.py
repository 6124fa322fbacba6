"""Appendix D's statistics (the paper's Table 8), computed from our own data; no training.

Promoter-centric Hi-C: for each gene, the per-base vector of transformed Hi-C contacts between its TSS's
bin and every base of TSS ± 100 kb (the reference code's 200,000-long vector: observed contacts with
the configured normalisation and resolution, ABC QC, power-law pseudocount, log10(x + 1); prism.preprocess).
A base "interacts" when its value exceeds 0.01; it is "long-range" beyond 50 kb from the TSS.
Distal enhancers: genes with at least one ABC candidate element more than 50 kb away in the cell line's
``EnhancerPredictionsAllPutative`` table (and, stricter, with ABC.Score >= 0.02, ABC's default threshold).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .genes import DataError, normalize_chrom, read_gene_table
from .preprocess import _read_hic_band, hic_features
from .shards import expand_hic, hic_offsets_for

FLANK = 100_000  # bp each side of the TSS
MIN_CONTACT = 0.01  # a base interacts above this transformed contact
LONG_RANGE = 50_000  # bp
ABC_THRESHOLD = 0.02  # ABC's default score threshold
CHUNK = 64  # genes expanded to bases at once

DEFINITIONS = [
    f"Hi-C statistics: per gene, the {2 * FLANK:,} bases of TSS ± {FLANK // 1000} kb, each with the transformed "
    f"contact of its bin to the TSS's bin; a base interacts when the value exceeds {MIN_CONTACT}; long range is "
    f"> {LONG_RANGE // 1000} kb from the TSS.",
    "partners: interacting bases per gene (any distance; the paper's 199,899 of 200,000 counts these); "
    "long-range partners: those beyond 50 kb.",
    "median distance: median over genes of the median distance (bp) of interacting bases; the paper labels its "
    "49,707 'kb' but its value is on the bp scale of a ±100 kb window.",
    f"distal enhancer: at least one ABC candidate element > {LONG_RANGE // 1000} kb from the TSS "
    f"(all putative elements; 'ABC >= {ABC_THRESHOLD}' counts only those above ABC's default threshold).",
]


def _sizes(fai) -> dict[str, int]:
    sizes = {}
    with open(fai) as fh:
        for line in fh:
            parts = line.split("\t")
            if len(parts) >= 2:
                sizes[normalize_chrom(parts[0])] = int(parts[1])
    return sizes


def hic_statistics(genes_tsv, hic: str, fai, *, normalization: str, resolution: int) -> dict:
    genes = read_gene_table(genes_tsv)
    sizes = _sizes(fai)
    offsets = hic_offsets_for(2 * FLANK, resolution)
    max_offset = int(np.abs(offsets).max())
    length = 2 * FLANK
    dist = np.abs(np.arange(length) - FLANK)  # (L,) distance of each base from the TSS
    far = dist > LONG_RANGE
    any_contact, any_long, partners, long_partners, med_dist = [], [], [], [], []
    for chrom, g in genes.groupby("chrom", sort=False):
        if chrom not in sizes:
            raise DataError(f"{fai}: chromosome {chrom} of {genes_tsv} is not in the genome index")
        band = _read_hic_band(hic, chrom, normalization, resolution, max_offset, sizes[chrom])
        tss = g["tss"].to_numpy(np.int64)
        bins = hic_features(band, tss, offsets, resolution)  # (n, nb)
        for i in range(0, len(tss), CHUNK):
            per_base = expand_hic(bins[i:i + CHUNK], offsets, resolution, tss[i:i + CHUNK], length, length)
            hit = per_base > MIN_CONTACT  # (b, L)
            any_contact += list(hit.any(1))
            any_long += list((hit & far).any(1))
            partners += list(hit.sum(1))
            long_partners += list((hit & far).sum(1))
            med_dist += [float(np.median(dist[h])) if h.any() else np.nan for h in hit]
    n = len(partners)
    return {
        "n_genes": n,
        "pct_contact": 100.0 * float(np.mean(any_contact)) if n else None,
        "pct_long_range": 100.0 * float(np.mean(any_long)) if n else None,
        "median_partners": int(np.median(partners)) if n else None,
        "median_long_range_partners": int(np.median(long_partners)) if n else None,
        "median_distance": float(np.nanmedian(med_dist)) if n else None,
    }


def enhancer_statistics(genes_tsv, abc_path, member: str | None) -> dict:
    """Share of genes with an ABC candidate element beyond 50 kb (all putative; and with ABC >= 0.02)."""
    from .candidates import _abc_gene_ids, read_abc_predictions

    genes = read_gene_table(genes_tsv)
    pairs = read_abc_predictions(abc_path, member, max_distance=float("inf"))
    pairs["gene_id"] = _abc_gene_ids(pairs["TargetGene"], genes, str(abc_path))
    distal = pairs[(pairs["distance"].abs() > LONG_RANGE) & pairs["gene_id"].notna()]
    ids = set(genes["gene_id"])
    linked = ids & set(distal["gene_id"])
    strong = ids & set(distal.loc[distal["abc_score"] >= ABC_THRESHOLD, "gene_id"])
    return {"pct_distal_enhancer": 100.0 * len(linked) / len(ids) if ids else None,
            "pct_distal_enhancer_abc02": 100.0 * len(strong) / len(ids) if ids else None}


def cell_statistics(genes_tsv, hic, fai, out, *, normalization: str, resolution: int, abc=None, abc_member=None,
                    log=print) -> dict:
    """All of Table 8's statistics of one cell line as JSON (with the definitions used)."""
    stats = hic_statistics(genes_tsv, hic, fai, normalization=normalization, resolution=resolution)
    if abc is not None:
        stats.update(enhancer_statistics(genes_tsv, abc, abc_member))
    stats["definitions"] = DEFINITIONS
    tmp = Path(str(out) + ".tmp")
    tmp.write_text(json.dumps(stats, indent=2) + "\n")
    os.replace(tmp, out)
    log(", ".join(f"{k} {v}" for k, v in stats.items() if k != "definitions"))
    return stats
