"""Long inputs (up to 200,000 bp, Seq2Exp's setting) served from per-chromosome base-resolution arrays.

Shards (:mod:`prism.shards`) copy each gene's window; at 200 kb that is 1.2x the genome per track
and neighbouring windows overlap. Here each chromosome is stored once, whole, and windows are
sliced at load time with ``pread``: as fast as slicing a memmap (benchmarks/long_input_benchmark.py),
but no file offset is shared between forked loader workers and no file pages are mapped into them
(a memmap's touched pages count in the workers' RSS and grow towards the whole store over an epoch).
Shards remain the path for lengths up to their window.

One difference from shards: the genome store upper-cases soft-masked bases; shards code lowercase
as N. The workflow's genome (Basenji's hg38.ml.fa) is uppercase according to DATA.md, so both agree there.

Layout (paths as the workflow writes them; ``{chrom}`` in our spelling, ``chr1``):

================================================  ========================================================
``results/store/genome/{chrom}.npy``               (size,) uint8 codes of :data:`prism.shards.SEQ_CODE`:
                                                   A=0 C=1 G=2 T=3; soft-masked (lowercase) bases upper-cased
                                                   first; N and IUPAC codes 4. Shared by all cell lines.
``results/store/{cell}/{chrom}.tracks.npy``        (T, size) float16: per-base bigWig values, raw, NaN -> 0;
                                                   bigBed tracks as 0/1 coverage. A value beyond float16's
                                                   range (|x| > 65504) is an error, never clipped.
``results/store/{cell}/{chrom}.tracks.json``       sidecar: chrom, size, dtype, shape, and per track its
                                                   name, source path, kind and max.
``results/store/{cell}/{chrom}.hic.npz``           per gene (TSS-sorted, as a shard): ``hic`` (n, nb) float32
                                                   over ``hic_offsets`` covering ``length`` bp (the shards'
                                                   transform, :func:`prism.preprocess.gene_hic`).
================================================  ========================================================

A window [tss - L/2, tss + L/2) past a chromosome end is padded with N (4) / 0, exactly as a shard.
Every file is written to a temp file in its folder and renamed: a killed build leaves no half file.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .genes import DataError, normalize_chrom
from .preprocess import (
    CHUNK_BP,
    gene_hic,
    genes_on,
    open_track,
    sequence_reader,
    track_reader,
    track_spec,
)
from .shards import N_CODE, hic_offsets_for

log = logging.getLogger(__name__)

#: dtype of the stored tracks: 2 bytes per base per track
TRACK_DTYPE = np.float16
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
#: format version written into the sidecars and long Hi-C files
STORE_VERSION = 1


def genome_path(root, chrom: str) -> Path:
    """``{root}/genome/{chrom}.npy`` (root: ``results/store``)."""
    return Path(root) / "genome" / f"{normalize_chrom(chrom)}.npy"


def track_paths(root, cell: str, chrom: str) -> tuple[Path, Path]:
    """(``{root}/{cell}/{chrom}.tracks.npy``, its ``.tracks.json`` sidecar)."""
    base = Path(root) / cell / normalize_chrom(chrom)
    return base.with_name(base.name + ".tracks.npy"), base.with_name(base.name + ".tracks.json")


def long_hic_path(root, cell: str, chrom: str) -> Path:
    """``{root}/{cell}/{chrom}.hic.npz``."""
    return Path(root) / cell / f"{normalize_chrom(chrom)}.hic.npz"


# ---------------------------------------------------------------- atomic writes


def _tmp_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def _atomic_npy(path, dtype, shape):
    """A writable memmap of a new .npy at a temp path; renamed to `path` when the block ends cleanly,
    removed if it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_of(path)
    try:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        yield mm
        mm.flush()
        del mm
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_write(path, write) -> None:
    """write(fh) into a temp file next to `path`, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_of(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ---------------------------------------------------------------- builders


def build_genome_store(fasta, chromosomes, out_dir) -> dict:
    """Write ``{out_dir}/{chrom}.npy`` (size,) uint8 codes for each chromosome of the FASTA.

    Soft-masked lowercase bases are bases (upper-cased); N and IUPAC ambiguity codes -> 4. Read in
    stretches of :data:`prism.preprocess.CHUNK_BP` bases (memory ~ one stretch). Logs each
    chromosome's N fraction. Returns {chrom: {"path", "size", "n_fraction", "seconds"}}.
    """
    out = {}
    for chrom in chromosomes:
        t0 = time.perf_counter()
        chrom = normalize_chrom(chrom)
        path = Path(out_dir) / f"{chrom}.npy"
        with sequence_reader(fasta, chrom, soft_masked_as_bases=True) as (size, read):
            n_bases = 0
            with _atomic_npy(path, np.uint8, (size,)) as mm:
                for a in range(0, size, CHUNK_BP):
                    b = min(size, a + CHUNK_BP)
                    codes = read(a, b)
                    mm[a:b] = codes
                    n_bases += int(np.count_nonzero(codes == N_CODE))
        frac = n_bases / size if size else 0.0
        seconds = time.perf_counter() - t0
        log.info("genome store %s: %s, %d bp, N fraction %.4f, %.1f s", path, chrom, size, frac, seconds)
        out[chrom] = {"path": str(path), "size": size, "n_fraction": frac, "seconds": seconds}
    return out


def build_track_store(tracks: dict, chrom: str, chrom_size: int, out_prefix) -> dict:
    """Write ``{out_prefix}.tracks.npy`` (T, chrom_size) float16 and its ``.tracks.json`` sidecar.

    tracks: {name: (path, kind)} (or a path: bigWig) in channel order, kind ``bigwig`` (raw per-base
    values, NaN -> 0) or ``bigbed`` (0/1 coverage), read with :func:`prism.preprocess.track_reader`
    in :data:`CHUNK_BP` stretches. A value with |x| > 65504 (float16's max) is a DataError naming the
    file and position: no clipping. Returns {"path", "sidecar", "tracks", "seconds"}.
    """
    t0 = time.perf_counter()
    chrom = normalize_chrom(chrom)
    size = int(chrom_size)
    specs = {name: track_spec(name, v) for name, v in tracks.items()}
    prefix = Path(out_prefix)
    npy = prefix.with_name(prefix.name + ".tracks.npy")
    sidecar = prefix.with_name(prefix.name + ".tracks.json")
    meta = []
    with _atomic_npy(npy, TRACK_DTYPE, (len(specs), size)) as mm:
        for j, (name, (path, kind)) in enumerate(specs.items()):
            handle = open_track(path, kind)
            try:
                read = track_reader(handle, path, kind, chrom, size)
                top, nonzero = 0.0, 0
                for a in range(0, size, CHUNK_BP):
                    b = min(size, a + CHUNK_BP)
                    values = read(a, b)  # (b - a,) float32
                    peak = max(float(values.max(initial=0.0)), -float(values.min(initial=0.0)))
                    if peak > FLOAT16_MAX:
                        i = int(np.argmax(np.abs(values) > FLOAT16_MAX))
                        raise DataError(f"{path}: {chrom}:{a + i} value {values[i]:g} overflows float16 "
                                        f"(|x| > {FLOAT16_MAX:g}) for track {name}")
                    mm[j, a:b] = values  # rounded to the nearest float16
                    top = max(top, peak)
                    nonzero += int(np.count_nonzero(values))
            finally:
                handle.close()
            meta.append({"name": name, "path": str(path), "kind": kind, "max_abs": top,
                         "nonzero_fraction": nonzero / size if size else 0.0})
    doc = {"version": STORE_VERSION, "chrom": chrom, "size": size, "dtype": np.dtype(TRACK_DTYPE).name,
           "shape": [len(specs), size], "pad": 0.0, "tracks": meta}
    _atomic_write(sidecar, lambda fh: fh.write((json.dumps(doc, indent=1) + "\n").encode()))
    seconds = time.perf_counter() - t0
    log.info("track store %s: %s, %d bp, tracks %s, %.1f s", npy, chrom, size, list(specs), seconds)
    return {"path": str(npy), "sidecar": str(sidecar), "tracks": list(specs), "seconds": seconds}


def build_long_hic(genes_tsv, chrom: str, hic: dict, length: int, out, *, chrom_size: int) -> dict:
    """Write per-gene Hi-C bins covering `length` bp around each TSS of `chrom` to `out` (.npz).

    hic: {"path", "normalization", "resolution"} as for shards; chrom_size: the genome's length of
    `chrom` (checked against the .hic). Rows are the genes of `genes_tsv` on `chrom`, TSS-sorted (a
    shard's order); values are :func:`prism.preprocess.gene_hic` over ``hic_offsets_for(length, res)``,
    so the central columns equal a shard's. Keys: gene_id (n,), tss (n,), hic (n, nb) float32,
    hic_offsets (nb,), hic_resolution, length, chrom, version. Returns {"path", "n_genes", "seconds"}.
    """
    t0 = time.perf_counter()
    length = int(length)
    if length <= 0 or length % 2:
        raise ValueError(f"length must be a positive even number, got {length}")
    chrom = normalize_chrom(chrom)
    gene_id, tss = genes_on(genes_tsv, chrom)
    resolution = int(hic.get("resolution", 5000))
    offsets = hic_offsets_for(length, resolution)
    outside = (tss < 0) | (tss >= chrom_size)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise DataError(f"{genes_tsv}: gene {gene_id[i]} TSS {tss[i]} is outside {chrom} ({chrom_size} bp)")
    if len(tss):
        values = gene_hic(hic["path"], chrom, str(hic.get("normalization", "VC")), resolution, int(chrom_size),
                          tss, offsets)
    else:
        values = np.zeros((0, len(offsets)), dtype=np.float32)
    arrays = dict(gene_id=gene_id, tss=tss, hic=values.astype(np.float32), hic_offsets=offsets,
                  hic_resolution=np.int64(resolution), length=np.int64(length), chrom=np.str_(chrom),
                  version=np.int64(STORE_VERSION))
    _atomic_write(out, lambda fh: np.savez(fh, **arrays))
    seconds = time.perf_counter() - t0
    log.info("long Hi-C %s: %s, %d genes, %d bins per gene (L=%d), %.1f s", out, chrom, len(tss), len(offsets),
             length, seconds)
    return {"path": str(out), "n_genes": len(tss), "seconds": seconds}


# ---------------------------------------------------------------- readers


class _NpyFile:
    """A C-order .npy read by ``os.preadv`` at computed offsets.

    The descriptor is opened lazily per process (forked or spawned DataLoader workers each open
    their own); pread moves no shared file offset.
    """

    def __init__(self, path, dtype, ndim: int):
        self.path = str(path)
        try:
            with open(self.path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, file_dtype = read_header(fh)
                self.offset = fh.tell()
        except FileNotFoundError:
            raise DataError(f"{self.path}: store file is missing") from None
        except ValueError as exc:
            raise DataError(f"{self.path}: not a .npy file ({exc})") from None
        if fortran or np.dtype(file_dtype) != np.dtype(dtype) or len(shape) != ndim:
            raise DataError(f"{self.path}: expected a C-order {ndim}-d {np.dtype(dtype).name} array, "
                            f"found {'Fortran' if fortran else 'C'}-order {shape} {np.dtype(file_dtype).name}")
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        want = self.offset + int(np.prod(self.shape)) * self.dtype.itemsize
        got = os.path.getsize(self.path)
        if got != want:
            raise DataError(f"{self.path}: {got} bytes, its header says {want} (truncated store file?)")
        self._fd, self._pid = None, None

    def __getstate__(self):
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self):
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)

    def read_into(self, out: np.ndarray, flat_start: int) -> None:
        """Fill the contiguous array `out` with the elements from flat index `flat_start` on."""
        if self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        view = memoryview(out).cast("B")
        pos, base = 0, self.offset + flat_start * self.dtype.itemsize
        while pos < len(view):
            n = os.preadv(self._fd, [view[pos:]], base + pos)
            if n == 0:
                raise DataError(f"{self.path}: ends before byte {base + pos} (truncated store file?)")
            pos += n


def _clip(starts: np.ndarray, length: int, size: int):
    """Per window [s, s + length): the part inside [0, size) as (lo, hi) in window coordinates, and
    its first base on the chromosome."""
    a = np.clip(starts, 0, size)
    b = np.clip(starts + length, 0, size)
    return a - starts, b - starts, a


class GenomeStore:
    """Sequence codes of the genome store: {chrom: path of its (size,) uint8 .npy}."""

    def __init__(self, paths: dict):
        self.files = {normalize_chrom(c): _NpyFile(p, np.uint8, 1) for c, p in paths.items()}
        self.sizes = {c: f.shape[0] for c, f in self.files.items()}

    @classmethod
    def open_dir(cls, directory, chromosomes) -> "GenomeStore":
        return cls({c: Path(directory) / f"{normalize_chrom(c)}.npy" for c in chromosomes})

    def _file(self, chrom) -> _NpyFile:
        try:
            return self.files[normalize_chrom(chrom)]
        except KeyError:
            raise DataError(f"genome store: chromosome {chrom} is not stored (has {sorted(self.files)})") from None

    def read_codes(self, chrom: str, start: int, end: int) -> np.ndarray:
        """(end - start,) uint8 codes of bases [start, end) of `chrom`; 4 (N) past the ends."""
        start, end = int(start), int(end)
        if end < start:
            raise ValueError(f"read_codes: end {end} < start {start}")
        f = self._file(chrom)
        out = np.full(end - start, N_CODE, dtype=np.uint8)
        a, b = max(start, 0), min(end, f.shape[0])
        if a < b:
            f.read_into(out[a - start : b - start], a)
        return out

    def windows(self, chrom, starts, length: int) -> np.ndarray:
        """(B, length) uint8 codes of [starts_i, starts_i + length) on chrom_i (B,), N past the ends."""
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        chrom = np.broadcast_to(np.asarray(chrom, dtype=object), starts.shape)
        out = np.full((len(starts), length), N_CODE, dtype=np.uint8)
        for i, (c, s) in enumerate(zip(chrom, starts)):
            f = self._file(c)
            lo, hi, a = _clip(np.int64(s), length, f.shape[0])
            if lo < hi:
                f.read_into(out[i, lo:hi], int(a))
        return out


@dataclass
class LongInputs:
    """What :meth:`StoreSource.fetch` returns for B genes at length L."""

    seq: np.ndarray     # (B, L) uint8 codes, N = 4 (prism.shards.one_hot makes the one-hot)
    tracks: np.ndarray  # (B, T, L) float32, in StoreSource.track_names order; 0 past the ends
    hic: np.ndarray     # (B, nb) float32 over StoreSource.hic_offsets; (B, 0) without Hi-C


class StoreSource:
    """One cell line's long inputs over its chromosomes, sliced per batch.

    genome: a :class:`GenomeStore` (shared by cell lines) or {chrom: genome .npy};
    tracks: {chrom: ``.tracks.npy``} (sidecar next to each), or None for no tracks;
    hic: {chrom: ``.hic.npz``} of :func:`build_long_hic`, or None;
    track_names: tracks to serve, in this order (default: the store's, which must then agree over
    chromosomes). For use with :func:`prism.shards.expand_hic`, ``hic_window`` is the length the
    Hi-C bins cover (pass it as ``window``).
    """

    def __init__(self, genome, tracks: dict | None, hic: dict | None = None, track_names=None):
        self.genome = genome if isinstance(genome, GenomeStore) else GenomeStore(genome)
        self._tracks = {}  # chrom -> (_NpyFile, row indices of the served tracks)
        stored_names = None
        for chrom, path in (tracks or {}).items():
            chrom = normalize_chrom(chrom)
            f = _NpyFile(path, TRACK_DTYPE, 2)
            sidecar = Path(str(path).removesuffix(".npy") + ".json")
            try:
                doc = json.loads(sidecar.read_text())
            except (FileNotFoundError, json.JSONDecodeError) as exc:
                raise DataError(f"{sidecar}: unreadable track sidecar ({exc})") from None
            names = [t["name"] for t in doc["tracks"]]
            if list(f.shape) != [len(names), self.genome.sizes.get(chrom, -1)] or doc["shape"] != list(f.shape):
                raise DataError(f"{path}: shape {f.shape} does not match its sidecar ({len(names)} tracks, "
                                f"{doc['shape']}) and the genome store's {chrom} ({self.genome.sizes.get(chrom)} bp)")
            if track_names is None and stored_names is not None and names != stored_names:
                raise DataError(f"{path}: tracks {names} differ from another chromosome's {stored_names}")
            stored_names = stored_names or names
            want = list(track_names) if track_names is not None else names
            missing = [n for n in want if n not in names]
            if missing:
                raise DataError(f"{sidecar}: no track {missing[0]!r} (has {names})")
            self._tracks[chrom] = (f, np.array([names.index(n) for n in want], dtype=np.int64))
        self.track_names = list(track_names) if track_names is not None else list(stored_names or [])
        if track_names and not tracks:
            raise DataError(f"tracks {list(track_names)} asked for, but no track store given")

        self._hic = {}  # chrom -> (tss sorted (n,), hic (n, nb), path)
        self.hic_offsets = np.zeros(0, dtype=np.int64)
        self.hic_resolution, self.hic_window = 0, 0
        for chrom, path in (hic or {}).items():
            chrom = normalize_chrom(chrom)
            try:
                with np.load(path, allow_pickle=False) as z:
                    part = {k: z[k] for k in ("tss", "hic", "hic_offsets", "hic_resolution", "length")}
            except (FileNotFoundError, KeyError, ValueError, OSError) as exc:
                raise DataError(f"{path}: unreadable long Hi-C file ({exc})") from None
            layout = (int(part["hic_resolution"]), int(part["length"]))
            if self._hic and (layout != (self.hic_resolution, self.hic_window)
                              or not np.array_equal(part["hic_offsets"], self.hic_offsets)):
                raise DataError(f"{path}: Hi-C resolution/length {layout} differ from another chromosome's "
                                f"{(self.hic_resolution, self.hic_window)}")
            self.hic_resolution, self.hic_window = layout
            self.hic_offsets = part["hic_offsets"]
            order = np.argsort(part["tss"], kind="stable")
            self._hic[chrom] = (part["tss"][order], part["hic"][order], str(path))

    def fetch(self, chrom, tss, length: int, dtype=np.float32) -> LongInputs:
        """Inputs of B genes given as rows (chrom (B,), tss (B,)) for windows [tss - L/2, tss + L/2).

        seq (B, L) uint8, tracks (B, T, L) float32 (dtype=np.float16: as stored, no conversion, half
        the bytes), hic (B, nb) float32 (the rows of these TSSs in the long Hi-C files; expand with
        ``expand_hic(hic, hic_offsets, hic_resolution, tss, hic_window, L)``).
        """
        length = int(length)
        if length <= 0 or length % 2:
            raise ValueError(f"length must be a positive even number, got {length}")
        tss = np.asarray(tss, dtype=np.int64).reshape(-1)
        chrom = [normalize_chrom(c) for c in np.broadcast_to(np.asarray(chrom, dtype=object), tss.shape)]
        starts = tss - length // 2
        seq = self.genome.windows(chrom, starts, length)
        n_tracks = len(self.track_names)
        raw = np.zeros((len(tss), n_tracks, length), dtype=TRACK_DTYPE)  # (B, T, L) as stored
        if n_tracks:
            for i, (c, s) in enumerate(zip(chrom, starts)):
                try:
                    f, rows = self._tracks[c]
                except KeyError:
                    raise DataError(f"track store: chromosome {c} is not stored (has {sorted(self._tracks)})") from None
                lo, hi, a = _clip(s, length, f.shape[1])
                if lo < hi:
                    for j, r in enumerate(rows):
                        f.read_into(raw[i, j, lo:hi], int(r) * f.shape[1] + int(a))
        if self._hic and length > self.hic_window:
            raise DataError(f"input length {length} is longer than the Hi-C store's {self.hic_window}")
        return LongInputs(seq=seq, tracks=raw.astype(dtype, copy=False), hic=self.hic_bins(chrom, tss))

    def hic_bins(self, chrom, tss) -> np.ndarray:
        """(B, nb) float32 Hi-C rows of the genes at (chrom (B,), tss (B,)); (B, 0) without Hi-C."""
        tss = np.asarray(tss, dtype=np.int64).reshape(-1)
        chrom = np.broadcast_to(np.asarray(chrom, dtype=object), tss.shape)
        hic = np.zeros((len(tss), len(self.hic_offsets)), dtype=np.float32)
        if not self._hic:
            return hic
        for i, (c, t) in enumerate(zip(chrom, tss)):
            c = normalize_chrom(c)
            if c not in self._hic:
                raise DataError(f"long Hi-C: chromosome {c} is not stored (has {sorted(self._hic)})")
            keys, values, path = self._hic[c]
            k = int(np.searchsorted(keys, t))
            if k == len(keys) or keys[k] != t:
                raise DataError(f"{path}: no Hi-C row for TSS {c}:{t} (built from another gene table?)")
            hic[i] = values[k]
        return hic


def read_codes_from(genome_dir, chromosomes):
    """The callable ``read_codes(chrom, start, end) -> (end - start,) uint8`` over a genome store."""
    return GenomeStore.open_dir(genome_dir, chromosomes).read_codes


# ---------------------------------------------------------------- interval masks (blacklist, peaks)


def merge_intervals(iv) -> np.ndarray:
    """(k, 2) int64 [start, end) -> sorted, disjoint, non-adjacent intervals (overlaps and touching
    intervals merged; empty ones dropped)."""
    iv = np.asarray(iv, dtype=np.int64).reshape(-1, 2)
    iv = iv[iv[:, 1] > iv[:, 0]]
    if len(iv) == 0:
        return iv
    iv = iv[np.argsort(iv[:, 0], kind="stable")]
    reach = np.maximum.accumulate(iv[:, 1])
    new = np.ones(len(iv), dtype=bool)
    new[1:] = iv[1:, 0] > reach[:-1]  # starts a group: begins after every earlier interval ends
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(iv)) - 1
    return np.stack([iv[first, 0], reach[last]], axis=1)


def read_bed_intervals(path) -> dict[str, np.ndarray]:
    """{chrom: (k, 2) int64 merged [start, end)} of a BED-like file (BED, narrowPeak; plain or gzip).

    Reads the first three columns; skips blank, ``#``, ``track`` and ``browser`` lines; chromosome
    names in our spelling (``chr1``). The ENCODE hg38 blacklist is read with this. A line without
    integer start <= end, or with a negative start, is a DataError naming the file and line.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    parts: dict[str, list] = {}
    try:
        with (gzip.open(path, "rt") if gz else open(path)) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip() or line.startswith(("#", "track", "browser")):
                    continue
                cols = line.split()
                try:
                    start, end = int(cols[1]), int(cols[2])
                except (IndexError, ValueError):
                    raise DataError(f"{path}: line {lineno} is not BED (chrom, start, end): {line.strip()[:60]!r}") from None
                if start < 0 or end < start:
                    raise DataError(f"{path}: line {lineno} has start {start}, end {end}")
                parts.setdefault(normalize_chrom(cols[0]), []).append((start, end))
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    return {c: merge_intervals(v) for c, v in parts.items()}


def interval_mask(intervals, starts, length: int) -> np.ndarray:
    """(B, length) bool: True where base starts_i + j lies inside any interval of one chromosome.

    intervals: (k, 2) int64 [start, end) (any order; merged here unless already disjoint and sorted);
    starts (B,): first base of each window (may be negative or run past the chromosome: no interval
    is there). Vectorised: one searchsorted, one scatter, one cumsum.
    """
    iv = np.asarray(intervals, dtype=np.int64).reshape(-1, 2)
    if len(iv) > 1 and not (np.all(iv[1:, 0] > iv[:-1, 1]) and np.all(iv[:, 1] > iv[:, 0])):
        iv = merge_intervals(iv)
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    n = len(starts)
    i0 = np.searchsorted(iv[:, 1], starts, side="right")  # first interval ending after the window start
    i1 = np.searchsorted(iv[:, 0], starts + length, side="left")  # intervals starting before its end
    count = np.maximum(i1 - i0, 0)  # (B,)
    row = np.repeat(np.arange(n), count)  # (m,) window of each (window, interval) pair
    first = np.repeat(i0 - np.cumsum(count) + count, count)
    which = first + np.arange(len(row))  # (m,) interval index
    lo = np.clip(iv[which, 0] - starts[row], 0, length)
    hi = np.clip(iv[which, 1] - starts[row], 0, length)
    edge = np.zeros((n, length + 1), dtype=np.int8)  # +1 where an interval opens, -1 where it closes
    edge[row, lo] += 1  # disjoint, non-adjacent intervals: no two pairs share a position
    edge[row, hi] -= 1
    return np.cumsum(edge[:, :length], axis=1, dtype=np.int8) > 0


def batch_interval_mask(by_chrom: dict, chrom, starts, length: int) -> np.ndarray:
    """(B, length) bool over windows on several chromosomes: by_chrom {chrom: (k, 2)} (a chromosome
    absent from it has no intervals), chrom (B,), starts (B,)."""
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    chrom = np.array([normalize_chrom(c) for c in np.broadcast_to(np.asarray(chrom, dtype=object), starts.shape)])
    out = np.zeros((len(starts), length), dtype=bool)
    for c in np.unique(chrom):
        sel = np.flatnonzero(chrom == c)
        iv = by_chrom.get(c)
        if iv is not None and len(iv):
            out[sel] = interval_mask(iv, starts[sel], length)
    return out
