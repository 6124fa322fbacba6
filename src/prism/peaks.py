"""DNase-seq peaks called with MACS3 from a cell line's DNase bigWig (no reads needed).

The bigWig is written out one chromosome at a time as a bedGraph (runs of equal value, read in
stretches of :data:`prism.preprocess.CHUNK_BP` bases; no data = 0), and ``macs3 bdgpeakcall``
calls peaks on it: a peak is a stretch of bases with value >= ``cutoff``, gaps shorter than
``max_gap`` bridged, kept when at least ``min_length`` long. The per-chromosome results are
concatenated, in natural chromosome order and with our ``chrN`` names, into one narrowPeak file
written atomically.

Parameter choice (:data:`CUTOFF`, :data:`MIN_LENGTH`, :data:`MAX_GAP`): neither Seq2Exp (its
loader reads finished ``peaks_{chrom}.macs3_peaks.narrowPeak`` files, their options unpublished)
nor EPInformer (ABC's MACS2 peaks on reads) states options for a signal track, so:

- ``cutoff = 2.0``: on a fold-change-over-control track (the output type the demo's DNase bigWigs
  declare) this keeps bases with at least two-fold DNase enrichment; MACS3's own default of 5 is
  meant for -log10 p-value tracks. A track of another output type (e.g. ENCODE's "read-depth
  normalized signal") needs its own cutoff: ``macs3 bdgpeakcall --cutoff-analysis`` tabulates
  peak counts per cutoff;
- ``min_length = 200`` and ``max_gap = 30``: MACS3's defaults (about one nucleosome-free DNase
  fragment, and one read length).

narrowPeak columns as MACS3 writes them: chrom, start, end, name (renamed ``{chrom}_peak{i}``,
unique over the file), score (int(10 x peak height)), strand ``.``, then MACS3's columns 7-9 and
the summit offset from start (column 10).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from prism.genes import DataError, chrom_sort_key, normalize_chrom
from prism.preprocess import CHUNK_BP

log = logging.getLogger(__name__)

#: bdgpeakcall settings used by the workflow (see the module docstring for why)
CUTOFF = 2.0
MIN_LENGTH = 200
MAX_GAP = 30


def open_bigwig(path):
    """pyBigWig handle of a bigWig; a missing or unreadable file is a DataError naming it."""
    import pyBigWig

    try:
        bw = pyBigWig.open(str(path))
    except RuntimeError:  # pyBigWig's answer to a missing file or a bad header
        bw = None
    if bw is None or not bw.isBigWig():
        raise DataError(f"{path}: not a readable bigWig")
    return bw


def macs3_executable() -> str:
    """Path of the ``macs3`` command: the one beside this interpreter first, then PATH."""
    found = shutil.which("macs3", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        raise RuntimeError("macs3 is not installed (pip install 'macs3>=3.0,<3.1')")
    return found


def call_dnase_peaks(
    bigwig,
    out,
    *,
    chromosomes=None,
    cutoff: float = CUTOFF,
    min_length: int = MIN_LENGTH,
    max_gap: int = MAX_GAP,
    tmpdir=None,
) -> dict:
    """Call peaks on a DNase bigWig with ``macs3 bdgpeakcall`` and write one narrowPeak file.

    bigwig: the cell line's DNase bigWig (``chr1`` or ``1`` naming). out: narrowPeak path,
    written atomically (temp file in the same folder, then rename). chromosomes: ours to call
    (``chrN`` or ``N``); None calls every chromosome of the bigWig. cutoff: minimum signal value
    (the track's units); min_length, max_gap: bp. tmpdir: where the per-chromosome bedGraphs go
    (one at a time; deleted after use).

    Returns {"path", "n_peaks", "per_chrom": {chrom: n}, "seconds"}.
    """
    if cutoff < 0 or min_length < 1 or max_gap < 0:
        raise ValueError(f"peaks: need cutoff >= 0, min_length >= 1, max_gap >= 0 (got {cutoff}, {min_length}, {max_gap})")
    t0 = time.perf_counter()
    macs3 = macs3_executable()
    bw = open_bigwig(bigwig)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    per_chrom = {}
    try:
        sizes = bw.chroms()
        by_ours = {normalize_chrom(name): name for name in sizes}
        wanted = sorted(by_ours, key=chrom_sort_key) if chromosomes is None else [normalize_chrom(c) for c in chromosomes]
        with tempfile.TemporaryDirectory(dir=tmpdir, prefix="macs3_") as scratch, open(tmp_out, "w") as fout:
            for chrom in wanted:
                if chrom not in by_ours:
                    raise DataError(f"{bigwig}: chromosome {chrom} is missing (file has {len(sizes)} chromosomes)")
                name = by_ours[chrom]
                bdg = Path(scratch) / f"{chrom}.bdg"
                _write_bedgraph(bw, name, sizes[name], chrom, bdg)
                called = Path(scratch) / f"{chrom}.narrowPeak"
                _bdgpeakcall(macs3, bdg, called, cutoff, min_length, max_gap, bigwig)
                bdg.unlink()
                per_chrom[chrom] = _append_renamed(called, chrom, fout)
        os.replace(tmp_out, out)
    finally:
        bw.close()
        if tmp_out.exists():
            tmp_out.unlink()
    seconds = time.perf_counter() - t0
    n = sum(per_chrom.values())
    log.info("peaks %s: %d MACS3 peaks from %s (cutoff %g, min length %d, max gap %d), %.1f s",
             out, n, bigwig, cutoff, min_length, max_gap, seconds)
    return {"path": str(out), "n_peaks": n, "per_chrom": per_chrom, "seconds": seconds}


def _write_bedgraph(bw, name: str, size: int, chrom: str, path: Path) -> None:
    """One chromosome of the bigWig as a bedGraph: runs of equal value, NaN (no data) as 0."""
    with open(path, "w") as fh:
        for a in range(0, size, CHUNK_BP):
            b = min(size, a + CHUNK_BP)
            v = np.nan_to_num(bw.values(name, a, b, numpy=True), nan=0.0).astype(np.float32)
            starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])  # first base of each run
            ends = np.r_[starts[1:], len(v)]
            lines = [f"{chrom}\t{a + s}\t{a + e}\t{x:.6g}\n" for s, e, x in zip(starts, ends, v[starts].tolist())]
            fh.writelines(lines)


def _bdgpeakcall(macs3: str, bdg: Path, called: Path, cutoff, min_length, max_gap, bigwig) -> None:
    cmd = [macs3, "bdgpeakcall", "-i", str(bdg), "-c", repr(float(cutoff)), "-l", str(int(min_length)),
           "-g", str(int(max_gap)), "--no-trackline", "-o", str(called)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or not called.exists():
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"{bigwig}: macs3 bdgpeakcall failed on {bdg.stem} (exit {res.returncode}): {last}")


def _append_renamed(called: Path, chrom: str, fout) -> int:
    """Copy MACS3's peaks of one chromosome to `fout`, sorted, named ``{chrom}_peak{i}``; returns the count."""
    rows = [line.rstrip("\n").split("\t") for line in called.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: (int(r[1]), int(r[2])))
    for i, r in enumerate(rows, 1):
        r[0], r[3] = chrom, f"{chrom}_peak{i}"
        fout.write("\t".join(r) + "\n")
    return len(rows)


def read_peaks(path) -> dict[str, np.ndarray]:
    """{chrom: (k, 2) int64 [start, end)} of a BED / narrowPeak file, sorted by start then end.

    Chromosomes are our ``chrN`` names; ``track`` / ``browser`` / ``#`` lines are skipped. A line
    with fewer than 3 columns, non-integer or negative coordinates, or end <= start is a DataError
    naming the file and line.
    """
    found: dict[str, list[tuple[int, int]]] = {}
    try:
        fh = open(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.startswith(("track", "browser", "#")):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                raise DataError(f"{path}: line {lineno} has {len(parts)} tab-separated columns, a peak needs 3")
            try:
                start, end = int(parts[1]), int(parts[2])
            except ValueError:
                raise DataError(f"{path}: line {lineno}: start/end {parts[1]!r}, {parts[2]!r} are not integers") from None
            if start < 0 or end <= start:
                raise DataError(f"{path}: line {lineno}: interval [{start}, {end}) is empty or negative")
            found.setdefault(normalize_chrom(parts[0]), []).append((start, end))
    out = {}
    for chrom in sorted(found, key=chrom_sort_key):
        iv = np.asarray(found[chrom], dtype=np.int64).reshape(-1, 2)
        out[chrom] = iv[np.lexsort((iv[:, 1], iv[:, 0]))]
    return out
