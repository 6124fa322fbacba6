"""The one shard format: per-(cell line, chromosome) ``.npz`` of TSS-centred windows (no torch).

A shard holds n genes; the window of gene i is [tss_i - W/2, tss_i + W/2) on the forward strand.

=================  ============  =====================================================================
key                shape         meaning
=================  ============  =====================================================================
``gene_id``        (n,) str      Ensembl gene IDs
``tss``            (n,) int64    0-based TSS
``window``         () int64      W, even
``seq``            (n, W) uint8  A=0, C=1, G=2, T=3 (either case), anything else (N, IUPAC, past the ends) = 4
``tracks``         (n, T, W) f4  per-base bigWig values, raw, NaN -> 0, 0 past the chromosome ends
``track_names``    (T,) str      e.g. ["h3k27ac", "dnase"]
``hic``            (n, nb) f4    transformed Hi-C contact between the TSS's bin and the bin at each
                                 offset (see :mod:`prism.preprocess`); (n, 0) without Hi-C
``hic_offsets``    (nb,) int64   consecutive bin offsets relative to the TSS's bin, covering the window
``hic_resolution`` () int64      bin size in bp (0 without Hi-C)
=================  ============  =====================================================================

Shards are zip-deflated (the ``.npz`` layout of ``np.savez_compressed``, see :data:`COMPRESSED`) with
fixed member dates, so the same arrays always give the same bytes: a shard rebuilt from unchanged
inputs has the same md5, and a training run stamped with it (prism.train) is not redone.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

#: whether shards are zip-deflated. Measured on the demo (chr1, 192 genes): W = 2000 3.5 MB -> 0.2 MB,
#: read 5 ms either way; W = 200,000 346 MB -> 21 MB, read 1.0 s -> 1.7 s, write 2.2 s -> 5.3 s.
#: Sequence codes and run-length bigWig signal deflate well; disk, not load time, is the limit at 200 kb.
COMPRESSED = True

#: ASCII byte -> sequence code (A=0, C=1, G=2, T=3, everything else 4), as the reference one-hot.
#: Lower case is a base: soft-masked genomes (UCSC, Ensembl) write repeats in lower case. N and the
#: IUPAC ambiguity codes (R, Y, ..., either case) are N.
SEQ_CODE = np.full(256, 4, dtype=np.uint8)
for _i, _b in enumerate(b"ACGT"):
    SEQ_CODE[_b] = SEQ_CODE[_b + 32] = _i
#: the same with lower case as N: repeats hard-masked (prism.preprocess.sequence_reader's option)
SEQ_CODE_UPPER_ONLY = SEQ_CODE.copy()
SEQ_CODE_UPPER_ONLY[np.frombuffer(b"acgt", dtype=np.uint8)] = 4
N_CODE = 4

KEYS = ("gene_id", "tss", "window", "seq", "tracks", "track_names", "hic", "hic_offsets", "hic_resolution")


def encode_seq(ascii_bytes) -> np.ndarray:
    """uint8 codes of an ASCII sequence (bytes or uint8 array); A/C/G/T in either case are bases."""
    arr = np.frombuffer(ascii_bytes, dtype=np.uint8) if isinstance(ascii_bytes, (bytes, bytearray)) else ascii_bytes
    return SEQ_CODE[arr]


def hic_offsets_for(window: int, resolution: int) -> np.ndarray:
    """Bin offsets relative to the TSS's bin that cover [tss - W/2, tss + W/2) for any TSS."""
    reach = window // 2 // resolution + 1
    return np.arange(-reach, reach + 1, dtype=np.int64)


def write_shard(
    path,
    *,
    gene_id,
    tss,
    seq,
    tracks,
    track_names,
    hic,
    hic_offsets,
    hic_resolution: int,
    window: int,
) -> None:
    """Validate shapes and write one shard atomically (temp file in the same folder, then rename)."""
    window = int(window)
    if window <= 0 or window % 2:
        raise ValueError(f"window must be a positive even number, got {window}")
    gene_id = np.asarray(gene_id, dtype=str)
    n = len(gene_id)
    track_names = np.asarray(track_names, dtype=str).reshape(-1)
    t = len(track_names)
    tss = np.asarray(tss, dtype=np.int64).reshape(n)
    seq = np.asarray(seq, dtype=np.uint8).reshape(n, window)
    tracks = np.asarray(tracks, dtype=np.float32).reshape(n, t, window)
    hic_offsets = np.asarray(hic_offsets, dtype=np.int64).reshape(-1)
    hic = np.asarray(hic, dtype=np.float32).reshape(n, len(hic_offsets))
    if len(hic_offsets) > 1 and not np.all(np.diff(hic_offsets) == 1):
        raise ValueError("hic_offsets must be consecutive integers")
    if len(gene_id) and len(np.unique(gene_id)) != n:
        raise ValueError(f"{path}: duplicate gene IDs in shard")
    arrays = dict(
        gene_id=gene_id,
        tss=tss,
        window=np.int64(window),
        seq=seq,
        tracks=tracks,
        track_names=track_names,
        hic=hic,
        hic_offsets=hic_offsets,
        hic_resolution=np.int64(hic_resolution),
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            _savez(fh, arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _savez(fh, arrays: dict) -> None:
    """``np.savez[_compressed]`` with a fixed date on every member (numpy stamps the current time)."""
    compression = zipfile.ZIP_DEFLATED if COMPRESSED else zipfile.ZIP_STORED
    with zipfile.ZipFile(fh, mode="w", compression=compression, allowZip64=True) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compression
            info.external_attr = 0o600 << 16
            with zf.open(info, mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def read_shard(path) -> dict:
    """All arrays of one shard (``window`` and ``hic_resolution`` as int)."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in KEYS}
    out["window"] = int(out["window"])
    out["hic_resolution"] = int(out["hic_resolution"])
    return out


def read_shards(paths) -> dict:
    """Concatenate shards along genes; window, track names and Hi-C layout must agree."""
    paths = list(paths)
    if not paths:
        raise ValueError("read_shards: no shard paths given")
    parts = [read_shard(p) for p in paths]
    first = parts[0]
    for p, part in zip(paths[1:], parts[1:]):
        for key in ("window", "hic_resolution"):
            if part[key] != first[key]:
                raise ValueError(f"{p}: {key} {part[key]} differs from {paths[0]} ({first[key]})")
        for key in ("track_names", "hic_offsets"):
            if not np.array_equal(part[key], first[key]):
                raise ValueError(f"{p}: {key} differs from {paths[0]}")
    out = {k: first[k] for k in ("window", "track_names", "hic_offsets", "hic_resolution")}
    for key in ("gene_id", "tss", "seq", "tracks", "hic"):
        out[key] = np.concatenate([part[key] for part in parts], axis=0)
    return out


def crop(arr, window: int, length: int):
    """The central `length` positions of the last axis (of size `window`)."""
    if length > window or (window - length) % 2:
        raise ValueError(f"cannot crop the central {length} of a window of {window}")
    start = (window - length) // 2
    return arr[..., start : start + length]


_ONE_HOT = np.zeros((256, 4), dtype=np.float32)
_ONE_HOT[np.arange(4), np.arange(4)] = 1.0
#: the same table, one 16-byte item per code: a single gather per base (4x faster than 4-float rows)
_ONE_HOT_ITEMS = _ONE_HOT.view(np.complex128).reshape(256)


def one_hot(seq_codes) -> np.ndarray:
    """(..., L) uint8 codes -> (..., L, 4) float32 one-hot over A, C, G, T; code 4 (N) is all zeros."""
    codes = np.asarray(seq_codes, dtype=np.uint8)
    return _ONE_HOT_ITEMS[codes.reshape(-1)].view(np.float32).reshape(*codes.shape, 4)


def expand_hic(hic, hic_offsets, hic_resolution: int, tss, window: int, length: int) -> np.ndarray:
    """Per-base Hi-C for the central `length` bases of each window.

    hic (n, nb) float32, hic_offsets (nb,) consecutive ints, tss (n,) -> (n, length) float32 where
    element [i, j] is the contact between gene i's TSS bin and the bin of base
    ``tss_i - length/2 + j``. Without Hi-C (nb == 0) the result is all zeros.
    """
    hic = np.asarray(hic, dtype=np.float32)
    tss = np.asarray(tss, dtype=np.int64).reshape(-1)
    n = len(tss)
    if length > window or (window - length) % 2:
        raise ValueError(f"cannot take the central {length} of a window of {window}")
    hic_offsets = np.asarray(hic_offsets, dtype=np.int64)
    if hic.shape[1] == 0 or hic_resolution <= 0:
        return np.zeros((n, length), dtype=np.float32)
    res = int(hic_resolution)
    first = tss - length // 2  # (n,) first base of the central crop
    last = first + length - 1
    col0 = first // res - tss // res - hic_offsets[0]  # (n,) column in hic of the first base's bin
    col1 = last // res - tss // res - hic_offsets[0]  # (n,) ... of the last base's bin
    if n and length and (col0.min() < 0 or col1.max() >= hic.shape[1]):
        raise ValueError("hic_offsets do not cover the requested length")
    out = np.empty((n, length), dtype=np.float32)
    for i in range(n):
        # bases per bin across the crop: runs between the bin edges inside it (the bins are consecutive)
        edges = np.arange(first[i] // res + 1, last[i] // res + 1, dtype=np.int64) * res - first[i]
        runs = np.diff(edges, prepend=0, append=length)
        out[i] = np.repeat(hic[i, col0[i] : col1[i] + 1], runs)
    return out
