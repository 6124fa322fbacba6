"""Per-gene predictions written for people: a TSV, and a BED of TSS positions for a genome browser.

The TSV has one row per gene in the order given: ``gene_id``, ``chrom``, ``tss`` (0-based), ``prediction``
(log10(CAGE + 1), the model's scale) and, when measured values are given, ``measured`` (empty for a gene, or
a cell line, without one).

The BED (BED6, sorted by chromosome then position) has one 1-bp feature per TSS:
``chrom, tss, tss + 1, name, score, strand``. ``name`` is ``<gene_id>|<prediction>`` so the raw value
shows as the feature's label (BED6 has no column for a float, and a 7th column would be read as
thickStart). ``score`` is the prediction scaled linearly to 0..1000 between the file's lowest and highest
prediction (1000 for all when they are equal); the track line says the range and sets ``useScore=1`` so
browsers shade features by it. Strand is ``.``: the TSS alone is the locus.

Both files are written atomically (a temporary file in the same folder, then a rename).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from prism.genes import DataError

__all__ = ["write_predictions", "bed_scores"]

_TRACK_NAME_BAD = re.compile(r'["\s]')


def bed_scores(predictions: np.ndarray) -> np.ndarray:
    """Predictions (N,) -> int BED scores (N,) in 0..1000, linear between the lowest and highest."""
    p = np.asarray(predictions, dtype=np.float64)
    if p.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = float(p.min()), float(p.max())
    if hi == lo:
        return np.full(p.shape, 1000, dtype=np.int64)
    return np.rint(1000.0 * (p - lo) / (hi - lo)).astype(np.int64)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_predictions(gene_ids, chroms, tss, predictions, tsv_out, bed_out, *, name: str,
                      description: str | None = None, measured=None) -> None:
    """Write per-gene predictions as ``tsv_out`` (TSV) and ``bed_out`` (BED6 with a track line).

    gene_ids, chroms: (N,) strings; tss: (N,) 0-based TSS positions; predictions: (N,) floats on the
    log10(CAGE + 1) scale. ``name`` is the browser track's name (e.g. ``prism-K562-seed2``; no spaces or
    quotes). Raises DataError naming the gene for a missing or non-finite value, ValueError for a bad name.
    """
    if not name or _TRACK_NAME_BAD.search(name):
        raise ValueError(f"track name {name!r} must be non-empty, without spaces or quotes")
    gene_ids = [str(g) for g in gene_ids]
    chroms = [str(c) for c in chroms]
    tss = np.asarray(tss)
    pred = np.asarray(predictions, dtype=np.float64).reshape(-1)
    n = len(gene_ids)
    if not (len(chroms) == n and tss.shape == (n,) and pred.shape == (n,)):
        raise ValueError(f"{n} gene ids but {len(chroms)} chromosomes, {tss.size} TSS and {pred.size} predictions")
    if n and not np.issubdtype(tss.dtype, np.integer):
        raise DataError(f"{bed_out}: TSS positions must be integers, got dtype {tss.dtype}")
    tss = tss.astype(np.int64)
    for i in range(n):
        if not np.isfinite(pred[i]):
            raise DataError(f"{tsv_out}: gene {gene_ids[i]} has prediction {pred[i]}")
        if tss[i] < 0:
            raise DataError(f"{bed_out}: gene {gene_ids[i]} has TSS {tss[i]} < 0")
        if not chroms[i] or any(c.isspace() for c in chroms[i]) or any(c.isspace() for c in gene_ids[i]):
            raise DataError(f"{bed_out}: gene {gene_ids[i]!r} on chromosome {chroms[i]!r}: names must not be "
                            f"empty or hold whitespace")

    if measured is None:
        tsv = ["gene_id\tchrom\ttss\tprediction"]
        tsv += [f"{g}\t{c}\t{t}\t{p:.6f}" for g, c, t, p in zip(gene_ids, chroms, tss.tolist(), pred.tolist())]
    else:
        y = np.asarray(measured, dtype=np.float64).reshape(-1)
        if y.shape != (n,):
            raise ValueError(f"{n} gene ids but {y.size} measured values")
        tsv = ["gene_id\tchrom\ttss\tprediction\tmeasured"]
        tsv += [f"{g}\t{c}\t{t}\t{p:.6f}\t{'' if np.isnan(m) else f'{m:.6f}'}"
                for g, c, t, p, m in zip(gene_ids, chroms, tss.tolist(), pred.tolist(), y.tolist())]

    scores = bed_scores(pred)
    lo, hi = (float(pred.min()), float(pred.max())) if n else (0.0, 0.0)
    desc = description or f"{name} predicted log10(CAGE+1) at each TSS"
    desc = _TRACK_NAME_BAD.sub(lambda m: "'" if m.group() == '"' else " ", desc)
    track = (f'track name="{name}" description="{desc}; score 0-1000 = prediction {lo:.4f}-{hi:.4f}" '
             f'useScore=1 visibility=dense')
    chrom_rank = {c: i for i, c in enumerate(dict.fromkeys(chroms))}  # chromosomes in the order they come
    order = sorted(range(n), key=lambda i: (chrom_rank[chroms[i]], int(tss[i]), gene_ids[i]))
    bed = [track]
    bed += [f"{chroms[i]}\t{tss[i]}\t{tss[i] + 1}\t{gene_ids[i]}|{pred[i]:.4f}\t{scores[i]}\t." for i in order]

    _atomic_write(Path(tsv_out), "\n".join(tsv) + "\n")
    _atomic_write(Path(bed_out), "\n".join(bed) + "\n")
