"""Build one shard (cell line x chromosome) from the gene table, the genome, bigWigs/bigBeds and a .hic.

Each input file is read once per chromosome, in bulk and in order: the sequence (pyfaidx) and each
bigWig's per-base values (``bw.values(chrom, a, b, numpy=True)``) in stretches of :data:`CHUNK_BP`
bases, each bigBed's intervals at once (``entries``), the .hic's near-diagonal band (hicstraw
``getRecords`` in chunks of rows). Per gene, windows are views into those arrays (no per-gene reads).

Transforms, as in the reference code (DATA.md, "How each per-gene input is built"):

- sequence: A/C/G/T -> 0..3 in either case (soft-masked repeats are bases), N and IUPAC ambiguity
  codes -> 4 (N); strand ignored (forward only);
- bigWig tracks: raw per-base values, NaN -> 0, no log, no scaling;
- bigBed tracks (e.g. DNase footprints): 1 where a base lies inside any interval, else 0;
- Hi-C: observed contacts, normalisation as configured (the paper: VC), 5 kb bins, intra-chromosomal;
  for each bin offset o around the TSS bin t, x = contact(t, t + o) (0 where no pixel), then
  :func:`transform_hic` (ABC QC, power-law scaling, pseudocount, NaN -> 0, log10(x + 1)).

Windows reaching past a chromosome end (TSS closer than W/2 to it) are padded with N (code 4) in
the sequence, 0 in the tracks, and 0 for Hi-C bins outside the chromosome.

Every input is checked when it is read, by the readers below (the shards and the long-input store
share them): a truncated or corrupt bigWig, bigBed, .hic or FASTA is a DataError, one line naming the
file; so is a chromosome the genes need that a track or .hic lacks, unless ``missing="zeros"`` asks
for a zero signal there (logged).
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import struct
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from prism.genes import DataError, normalize_chrom, read_gene_table, resolve_chrom
from prism.shards import N_CODE, SEQ_CODE, SEQ_CODE_UPPER_ONLY, hic_offsets_for, write_shard

log = logging.getLogger(__name__)

#: ABC power-law model of contact vs distance: powerlaw(d) = exp(scale - gamma * log(d + 1))
HIC_GAMMA = 0.87  # gamma of this Hi-C (the reference uses the default, not a fit)
HIC_GAMMA_REFERENCE = 0.87  # gamma the contacts are rescaled to: the same, so the scaling is the identity
HIC_MIN_DISTANCE = 5000  # distances are clipped to at least this (bp)
HIC_PSEUDOCOUNT_DISTANCE = 1_000_000  # pseudocount = min(powerlaw(d), powerlaw(this))
HIC_QC_FLANK = 500  # a gene whose contacts over TSS +-500 bp sum below HIC_QC_MIN gets NaN
HIC_QC_MIN = 0.01
HIC_CHUNK_BINS = 1000  # rows of the band fetched per getRecords call (200: 0.77 s, 1000: 0.63 s on hg38 chr1)
#: bases of a chromosome read at once for sequence and bigWig windows: bounds memory (hg38 chr1: 16 stretches)
CHUNK_BP = 16_000_000


# ---------------------------------------------------------------- genome


def chrom_sizes(fasta) -> dict[str, int]:
    """{name: length} of a FASTA (plain or bgzip) read through its pyfaidx index, names as in the file."""
    import pyfaidx

    try:
        fa = pyfaidx.Fasta(str(fasta))
    except (pyfaidx.UnsupportedCompressionFormat, FileNotFoundError, ValueError) as exc:
        raise DataError(f"{fasta}: cannot index FASTA ({str(exc).splitlines()[0]})") from None
    try:
        return {name: len(fa[name]) for name in fa.keys()}
    finally:
        fa.close()


def gunzip_fasta(src_gz, dest) -> Path:
    """Stream-decompress a (b)gzip FASTA to `dest` atomically (temp file in the same folder, rename)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with gzip.open(src_gz, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, length=1 << 22)
        os.replace(tmp, dest)
    except (OSError, EOFError) as exc:
        raise DataError(f"{src_gz}: cannot gunzip ({exc})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


# ---------------------------------------------------------------- file checks

#: what a signal file lacking a chromosome the genes need gives: "error" (DataError naming the file and
#: the chromosome) or "zeros" (a zero signal on that chromosome, logged as a warning)
MISSING_POLICIES = ("error", "zeros")

BBI_MAGIC = {"bigwig": 0x888FFC26, "bigbed": 0x8789F2EB}  # the first and last 4 bytes of a bigWig / bigBed
BBI_LABEL = {"bigwig": "bigWig", "bigbed": "bigBed"}
_RTREE_MAGIC, _CHROM_TREE_MAGIC = 0x2468ACE0, 0x78CA8C91


def _check_policy(missing: str) -> str:
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing={missing!r}: expected one of {', '.join(MISSING_POLICIES)}")
    return missing


def _file_size(path) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None


def absent_chromosome(path, chrom: str, available, what: str, missing: str) -> bool:
    """A chromosome the genes need is not in a signal file: DataError (missing="error") or a logged
    warning and True (missing="zeros": the caller fills zeros)."""
    if _check_policy(missing) == "error":
        raise DataError(f"{path}: chromosome {chrom} is missing (file has {len(set(available))} chromosomes), but "
                        f"genes on {chrom} need its {what}")
    log.warning("%s: chromosome %s is missing: its %s is all 0 (missing='zeros')", path, chrom, what)
    return True


def check_bbi(path, kind: str) -> None:
    """DataError (one line naming the file) unless `path` is a whole bigWig (kind ``bigwig``) or bigBed.

    Checks the bbi layout against the file's size: the signature at the start and at the end (UCSC tools
    and libBigWig end every file with it), and the chromosome tree, the data index and each zoom level's
    index where the header says they are. A truncated file fails one of these; libBigWig itself opens a
    file cut anywhere after its data index and reads it without a word.
    """
    label = BBI_LABEL[kind]
    size = _file_size(path)

    def bad(why: str):
        return DataError(f"{path}: not a readable {label} ({why})")

    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64:
            raise bad(f"truncated: {size} bytes, less than its header")
        for endian in "<>":
            magic = struct.unpack(endian + "I", head[:4])[0]
            if magic in BBI_MAGIC.values():
                break
        else:
            raise bad("no bigWig or bigBed signature at its start")
        if magic != BBI_MAGIC[kind]:
            raise bad(f"it is a {BBI_LABEL[next(k for k, v in BBI_MAGIC.items() if v == magic)]}")
        (_, zoom_levels, chrom_tree, _, full_index, *_rest) = struct.unpack(endian + "HHQQQHHQQIQ", head[4:64])
        zooms = f.read(24 * zoom_levels)
        if len(zooms) < 24 * zoom_levels:
            raise bad(f"truncated: {size:,} bytes end inside its header")
        parts = [("chromosome tree", chrom_tree, _CHROM_TREE_MAGIC), ("data index", full_index, _RTREE_MAGIC)]
        for i in range(zoom_levels):
            index = struct.unpack(endian + "IIQQ", zooms[24 * i:24 * i + 24])[3]
            parts.append((f"zoom level {i + 1} index", index, _RTREE_MAGIC))
        for what, offset, want in parts:
            if offset + 4 > size:
                raise bad(f"truncated: its {what} is at byte {offset:,} but the file has {size:,} bytes")
            f.seek(offset)
            if struct.unpack(endian + "I", f.read(4))[0] != want:
                raise bad(f"corrupt: no {what} at byte {offset:,}, where its header puts it")
        f.seek(size - 4)
        if struct.unpack(endian + "I", f.read(4))[0] != magic:
            raise bad(f"truncated: its {size:,} bytes do not end with the {label} signature")


def _hic_string(f, path) -> str:
    """A NUL-terminated string of a .hic header (at most 64 kB, so garbage cannot run away)."""
    out = bytearray()
    while len(out) < 65536:
        c = f.read(1)
        if not c:
            raise DataError(f"{path}: truncated .hic (the file ends inside its header)")
        if c == b"\0":
            return out.decode("utf-8", "replace")
        out += c
    raise DataError(f"{path}: corrupt .hic (a header string runs over 64 kB)")


def _hic_unpack(f, fmt: str, path, what: str):
    n = struct.calcsize(fmt)
    raw = f.read(n)
    if len(raw) < n:
        raise DataError(f"{path}: truncated .hic (the file ends inside its {what})")
    return struct.unpack(fmt, raw)


def hic_layout(path) -> dict:
    """Header and master index of a .hic file (Juicer format v6-v9), checked against the file's size.

    Returns {"version", "chromosomes": {name: (index, length)}, "resolutions": [bp], "matrices":
    {"i_j": (file position, bytes)}}. A file cut short (its master index, a matrix or the normalisation
    vectors beyond its end) or without the .hic signature is a DataError naming the file; hicstraw would
    open it and report no contacts.
    """
    size = _file_size(path)
    with open(path, "rb") as f:
        if f.read(4) != b"HIC\0":
            raise DataError(f"{path}: not a .hic file (no HIC signature at its start)")
        version, master = _hic_unpack(f, "<iq", path, "header")
        _hic_string(f, path)  # genome id
        if version >= 9:
            nvi_position, nvi_bytes = _hic_unpack(f, "<qq", path, "header")
            if nvi_position + nvi_bytes > size:
                raise DataError(f"{path}: truncated .hic: its normalisation vectors end at byte "
                                f"{nvi_position + nvi_bytes:,} but the file has {size:,} bytes")
        for _ in range(_hic_unpack(f, "<i", path, "header")[0]):  # attributes
            _hic_string(f, path), _hic_string(f, path)
        chromosomes = {}
        for i in range(_hic_unpack(f, "<i", path, "header")[0]):
            name = _hic_string(f, path)
            chromosomes[name] = (i, _hic_unpack(f, "<q" if version >= 9 else "<i", path, "header")[0])
        n_res = _hic_unpack(f, "<i", path, "header")[0]
        resolutions = list(_hic_unpack(f, f"<{n_res}i", path, "header"))
        if master + 12 > size:
            raise DataError(f"{path}: truncated .hic: its master index is at byte {master:,} but the file has "
                            f"{size:,} bytes")
        f.seek(master)
        n_bytes = _hic_unpack(f, "<q" if version >= 9 else "<i", path, "master index")[0]
        if f.tell() + n_bytes > size:
            raise DataError(f"{path}: truncated .hic: its master index ends at byte {f.tell() + n_bytes:,} but the "
                            f"file has {size:,} bytes")
        matrices = {}
        for _ in range(_hic_unpack(f, "<i", path, "master index")[0]):
            key = _hic_string(f, path)
            matrices[key] = _hic_unpack(f, "<qi", path, "master index")
            if sum(matrices[key]) > size:
                raise DataError(f"{path}: truncated .hic: its {key} matrix ends at byte {sum(matrices[key]):,} but "
                                f"the file has {size:,} bytes")
    return {"version": version, "chromosomes": chromosomes, "resolutions": resolutions, "matrices": matrices}


def check_hic_matrix(path, layout: dict, name: str, resolution: int) -> bool:
    """Whether the .hic has a contact matrix of chromosome `name` (the file's spelling) with itself;
    if so, DataError unless every block of it at `resolution` bp lies inside the file."""
    index = layout["chromosomes"][name][0]
    entry = layout["matrices"].get(f"{index}_{index}")
    if entry is None:
        return False
    size = _file_size(path)
    with open(path, "rb") as f:
        f.seek(entry[0])
        _, _, n_res = _hic_unpack(f, "<iii", path, f"{name} matrix")
        for _ in range(n_res):
            unit = _hic_string(f, path)
            *_stats, bin_size, _, _, n_blocks = _hic_unpack(f, "<iffffiiii", path, f"{name} matrix")
            blocks = np.frombuffer(f.read(16 * n_blocks), dtype=np.dtype([("n", "<i4"), ("pos", "<i8"), ("len", "<i4")]))
            if len(blocks) < n_blocks:
                raise DataError(f"{path}: truncated .hic (the file ends inside the {name} matrix index)")
            if unit == "BP" and bin_size == resolution and n_blocks:
                end = int((blocks["pos"] + blocks["len"]).max())
                if end > size:
                    raise DataError(f"{path}: truncated .hic: the {name} contacts at {resolution} bp end at byte "
                                    f"{end:,} but the file has {size:,} bytes")
    return True


def check_fasta_index(fasta) -> None:
    """DataError if the FASTA's ``.fai`` (when there is one) says a sequence ends past the file's end:
    the FASTA was cut short after it was indexed (pyfaidx would silently re-index the shorter file)."""
    fai = Path(f"{fasta}.fai")
    if not fai.exists():
        return
    size = _file_size(fasta)
    try:
        rows = [line.split("\t") for line in fai.read_text().splitlines() if line.strip()]
        ends = [(r[0], int(r[2]) + (int(r[1]) // int(r[3])) * int(r[4]) + int(r[1]) % int(r[3])) for r in rows]
    except (OSError, ValueError, IndexError, ZeroDivisionError):
        return  # not an index pyfaidx wrote: pyfaidx rebuilds or reports it
    name, end = max(ends, key=lambda e: e[1], default=("", 0))
    if end > size:
        raise DataError(f"{fasta}: truncated FASTA: its index {fai.name} says {name} ends at byte {end:,} but the "
                        f"file has {size:,} bytes (if the FASTA was replaced on purpose, delete the .fai)")


# ---------------------------------------------------------------- Hi-C


def powerlaw(distance, gamma: float = HIC_GAMMA) -> np.ndarray:
    """ABC's expected contact at `distance` bp: exp(scale - gamma * log(d + 1)), d clipped to >= 5 kb,
    scale = -4.80 + 11.63 * gamma."""
    d = np.maximum(np.asarray(distance, dtype=np.float64), HIC_MIN_DISTANCE)
    scale = -4.80 + 11.63 * gamma
    return np.exp(scale - gamma * np.log(d + 1.0))


def transform_hic(contacts, qc_sum, hic_offsets, resolution: int) -> np.ndarray:
    """Reference transform of raw contacts (n, nb) (NaN where the bin is off the chromosome).

    qc_sum (n,): each gene's contacts summed over the bins covering TSS +-500 bp. Steps:
    ABC QC (qc_sum < 0.01 -> the gene's contacts NaN); power-law scaling x * powerlaw_ref(d) /
    powerlaw(d) (gamma 0.87 both: identity); + min(powerlaw(d), powerlaw(1e6)); NaN -> 0;
    log10(x + 1). d = |offset| * resolution bp. Returns float32 (n, nb).
    """
    x = np.array(contacts, dtype=np.float64)
    x[np.asarray(qc_sum) < HIC_QC_MIN, :] = np.nan
    d = np.abs(np.asarray(hic_offsets, dtype=np.float64)) * resolution  # (nb,)
    x = x * (powerlaw(d, HIC_GAMMA_REFERENCE) / powerlaw(d, HIC_GAMMA))[None, :]
    x = x + np.minimum(powerlaw(d), powerlaw(HIC_PSEUDOCOUNT_DISTANCE))[None, :]
    x = np.nan_to_num(x, nan=0.0)
    return np.log10(x + 1.0).astype(np.float32)


def _read_hic_band(path, chrom: str, normalization: str, resolution: int, max_offset: int, size: int,
                   missing: str = "error"):
    """Observed `normalization` contacts at `resolution` within `max_offset` bins of the diagonal.

    Returns band (nbins, max_offset + 1) float64 with band[a, k] = contact(bin a, bin a + k); 0 where
    the file has no pixel. The file is checked first (:func:`hic_layout`): truncated, or without a
    contact matrix of `chrom`, is a DataError (all zeros with missing="zeros", logged).
    """
    import hicstraw

    layout = hic_layout(path)
    nbins = -(-size // resolution)
    band = np.zeros((nbins, max_offset + 1), dtype=np.float64)
    lengths = {c: length for c, (_, length) in layout["chromosomes"].items() if c.lower() != "all"}
    # asking hicstraw for an absent chromosome or resolution crashes the process: check first
    try:
        name = resolve_chrom(chrom, lengths, path)
    except DataError:
        absent_chromosome(path, chrom, lengths, "Hi-C", missing)
        return band
    if lengths[name] != size:
        raise DataError(f"{path}: {name} is {lengths[name]} bp, the genome says {size} (assembly mismatch?)")
    if resolution not in layout["resolutions"]:
        raise DataError(f"{path}: no {resolution} bp resolution (has {sorted(layout['resolutions'])})")
    if not check_hic_matrix(path, layout, name, resolution):
        if _check_policy(missing) == "error":
            raise DataError(f"{path}: no contacts of {name} (the file has no {name}-{name} matrix), but genes on "
                            f"{chrom} need its Hi-C")
        log.warning("%s: no contacts of %s: its Hi-C is all 0 (missing='zeros')", path, name)
        return band
    try:
        hf = hicstraw.HiCFile(str(path))
    except Exception as exc:  # hicstraw raises plain RuntimeError / ValueError
        raise DataError(f"{path}: cannot open .hic ({exc})") from None
    try:
        mzd = hf.getMatrixZoomData(name, name, "observed", normalization, "BP", resolution)
    except Exception as exc:
        raise DataError(
            f"{path}: no {normalization} normalization vectors for {name} at {resolution} bp ({type(exc).__name__}: {exc})"
        ) from None
    for a0 in range(0, nbins, HIC_CHUNK_BINS):
        a1 = min(nbins, a0 + HIC_CHUNK_BINS) - 1
        b1 = min(nbins - 1, a1 + max_offset)
        try:
            recs = mzd.getRecords(a0 * resolution, a1 * resolution, a0 * resolution, b1 * resolution)
        except Exception as exc:
            raise DataError(f"{path}: reading {name} ({normalization}, {resolution} bp) failed: {exc}") from None
        if not recs:
            continue
        x = np.fromiter((r.binX for r in recs), dtype=np.int64, count=len(recs)) // resolution
        y = np.fromiter((r.binY for r in recs), dtype=np.int64, count=len(recs)) // resolution
        v = np.fromiter((r.counts for r in recs), dtype=np.float64, count=len(recs))
        lo, hi = np.minimum(x, y), np.maximum(x, y)
        k = hi - lo
        keep = (k <= max_offset) & (lo >= a0) & (lo <= a1)
        band[lo[keep], k[keep]] = v[keep]
    return band


def hic_features(band, tss, hic_offsets, resolution: int) -> np.ndarray:
    """Transformed contacts (n, nb) between each TSS's bin and the bins at `hic_offsets` from it."""
    nbins = band.shape[0]
    tss = np.asarray(tss, dtype=np.int64)
    tbin = tss // resolution  # (n,)
    other = tbin[:, None] + hic_offsets[None, :]  # (n, nb)
    inside = (other >= 0) & (other < nbins)
    lo = np.clip(np.minimum(tbin[:, None], other), 0, nbins - 1)
    k = np.abs(hic_offsets)[None, :].repeat(len(tss), axis=0)
    contacts = np.where(inside, band[lo, np.minimum(k, band.shape[1] - 1)], np.nan)
    # ABC QC: contacts between the TSS bin and the (distinct) bins covering [tss - 500, tss + 500)
    qc = np.zeros(len(tss))
    first = np.clip((tss - HIC_QC_FLANK) // resolution, 0, nbins - 1)
    last = np.clip((tss + HIC_QC_FLANK - 1) // resolution, 0, nbins - 1)
    for j in range(int((last - first).max(initial=0)) + 1):
        b = first + j
        ok = b <= last
        lo_b, k_b = np.minimum(tbin, b), np.abs(b - tbin)
        qc += np.where(ok, band[lo_b, np.minimum(k_b, band.shape[1] - 1)], 0.0)
    return transform_hic(contacts, qc, hic_offsets, resolution)


def gene_hic(path, chrom: str, normalization: str, resolution: int, size: int, tss, hic_offsets,
             missing: str = "error") -> np.ndarray:
    """Transformed contacts (n, nb) float32 of each TSS's bin with the bins at `hic_offsets` from it,
    read from the .hic at `path` (one band read for the chromosome, reaching the offsets and the QC flank).
    missing: see :data:`MISSING_POLICIES`."""
    max_offset = int(max(np.abs(hic_offsets).max(), -(-HIC_QC_FLANK // resolution)))
    band = _read_hic_band(path, chrom, normalization, resolution, max_offset, size, missing)
    return hic_features(band, tss, hic_offsets, resolution)


# ---------------------------------------------------------------- the shard


def build_shard(
    *,
    genes_tsv,
    chrom: str,
    fasta,
    tracks: dict,
    hic: dict | None,
    window: int,
    out,
    missing: str = "error",
) -> dict:
    """Write the shard of one chromosome: every gene of `genes_tsv` on `chrom` (empty shard if none).

    tracks: {name: path} (a bigWig) or {name: (path, kind)} with kind ``bigwig`` (raw per-base values)
      or ``bigbed`` (1 inside any interval, else 0), in channel order (the paper: h3k27ac, dnase).
    hic: {"path": .hic, "normalization": "VC", "resolution": 5000} or None (shard gets hic (n, 0)).
    window: W (even), bp.
    missing: a track or .hic without `chrom` is a DataError ("error"), or a zero signal ("zeros", logged).
    Returns {"path", "n_genes", "seconds", "n_fraction", "soft_masked_fraction"}: the fraction of the
    window bases inside the chromosome that are N (or another ambiguity code), and of the bases read
    from the FASTA that are lower case (soft-masked repeats, read as bases); both 0.0 without genes.

    The chromosome is read in stretches of :data:`CHUNK_BP` bases (sequence, bigWigs) so that memory
    stays near n * W * (1 + 4 * T) bytes plus one stretch, whatever the chromosome's length.
    """
    t0 = time.perf_counter()
    window = int(window)
    if window <= 0 or window % 2:
        raise DataError(f"window must be a positive even number, got {window}")
    _check_policy(missing)
    chrom = normalize_chrom(chrom)
    gene_id, tss = genes_on(genes_tsv, chrom)
    n = len(gene_id)
    specs = {name: track_spec(name, v) for name, v in tracks.items()}
    names = list(specs)
    if hic:
        resolution = int(hic.get("resolution", 5000))
        normalization = str(hic.get("normalization", "VC"))
        hic_offsets = hic_offsets_for(window, resolution)
    else:
        resolution, normalization, hic_offsets = 0, None, np.zeros(0, dtype=np.int64)

    seq = np.full((n, window), N_CODE, dtype=np.uint8)
    track_arr = np.zeros((n, len(names), window), dtype=np.float32)
    hic_arr = np.zeros((n, len(hic_offsets)), dtype=np.float32)
    n_fraction = soft_masked = 0.0
    if n:
        size, soft_masked = _fill_sequence(fasta, chrom, tss, seq)
        outside = (tss < 0) | (tss >= size)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise DataError(f"{genes_tsv}: gene {gene_id[i]} TSS {tss[i]} is outside {chrom} of {fasta} ({size} bp)")
        # window bases past the chromosome's ends are padding, not N of the genome
        half = window // 2
        padding = int(np.maximum(half - tss, 0).sum() + np.maximum(tss + half - size, 0).sum())
        n_fraction = (int(np.count_nonzero(seq == N_CODE)) - padding) / max(1, n * window - padding)
        for j, name in enumerate(names):
            path, kind = specs[name]
            _fill_track(path, kind, chrom, size, tss, track_arr[:, j], missing)
        if hic:
            hic_arr = gene_hic(hic["path"], chrom, normalization, resolution, size, tss, hic_offsets, missing)
    write_shard(
        out,
        gene_id=gene_id,
        tss=tss,
        seq=seq,
        tracks=track_arr,
        track_names=names,
        hic=hic_arr,
        hic_offsets=hic_offsets,
        hic_resolution=resolution,
        window=window,
    )
    seconds = time.perf_counter() - t0
    log.info("shard %s: %s, %d genes, W=%d, N %.2f%% of window bases, soft-masked %.1f%% (read as bases), %.2f s",
             out, chrom, n, window, 100 * n_fraction, 100 * soft_masked, seconds)
    return {"path": str(out), "n_genes": n, "seconds": seconds, "n_fraction": n_fraction,
            "soft_masked_fraction": soft_masked}


def genes_on(genes_tsv, chrom: str) -> tuple[np.ndarray, np.ndarray]:
    """(gene_id (n,) str, tss (n,) int64) of the genes of `genes_tsv` on `chrom`, TSS-sorted (stable):
    the row order of a shard."""
    genes = read_gene_table(genes_tsv)
    genes = genes[genes["chrom"] == normalize_chrom(chrom)].sort_values("tss", kind="stable")
    return genes["gene_id"].to_numpy(dtype=str), genes["tss"].to_numpy(dtype=np.int64)


TRACK_KINDS = ("bigwig", "bigbed")


def track_spec(name: str, value) -> tuple[str, str]:
    """(path, kind) of one track given as a path, a (path, kind) pair or {"path", "kind"}."""
    if isinstance(value, dict):
        path, kind = value["path"], value.get("kind", "bigwig")
    elif isinstance(value, (list, tuple)):
        path, kind = value
    else:
        path, kind = value, "bigwig"
    if kind not in TRACK_KINDS:
        raise DataError(f"{path}: track {name} has kind {kind!r}, not one of {', '.join(TRACK_KINDS)}")
    return str(path), kind


# ---------------------------------------------------------------- per-gene windows from chunked reads


def _stretches(tss: np.ndarray, half: int):
    """(i0, i1, lo, hi) per stretch: genes i0:i1 (TSS sorted) have TSS in one CHUNK_BP stretch, and
    [lo, hi) (may reach past the chromosome ends) spans all their windows [tss - half, tss + half)."""
    key = tss // CHUNK_BP
    cuts = np.flatnonzero(np.diff(key)) + 1
    for i0, i1 in zip(np.r_[0, cuts], np.r_[cuts, len(tss)]):
        yield int(i0), int(i1), int(tss[i0]) - half, int(tss[i1 - 1]) + half


def _windows(read, size: int, tss: np.ndarray, out: np.ndarray, pad) -> None:
    """Fill out[i] (n, W) with bases [tss_i - W/2, tss_i + W/2) of a chromosome of `size` bases.

    read(a, b) returns bases [a, b) (0 <= a < b <= size) as an array of out's dtype; bases past the
    ends take `pad`. The chromosome is read one stretch at a time; windows are views into it.
    """
    window = out.shape[1]
    for i0, i1, lo, hi in _stretches(tss, window // 2):
        buf = np.full(hi - lo, pad, dtype=out.dtype)
        a, b = max(lo, 0), min(hi, size)
        if a < b:
            buf[a - lo : b - lo] = read(a, b)
        out[i0:i1] = sliding_window_view(buf, window)[tss[i0:i1] - window // 2 - lo]


#: bytes a FASTA sequence may hold: letters (bases, IUPAC codes, either case) and gap/stop marks
_FASTA_LETTER = np.zeros(256, dtype=bool)
_FASTA_LETTER[[*range(65, 91), *range(97, 123), ord("-"), ord("*"), ord(".")]] = True
_LOWER = np.zeros(256, dtype=bool)
_LOWER[97:123] = True


def open_fasta(fasta):
    """pyfaidx.Fasta (raw strings, case kept) of a plain or bgzip FASTA; DataError naming the file if it
    is missing, cut short since it was indexed, or not a FASTA pyfaidx can index."""
    import pyfaidx

    check_fasta_index(fasta)
    try:
        return pyfaidx.Fasta(str(fasta), as_raw=True, sequence_always_upper=False)
    except (pyfaidx.UnsupportedCompressionFormat, pyfaidx.FastaIndexingError, FileNotFoundError, ValueError) as exc:
        raise DataError(f"{fasta}: not a readable FASTA ({str(exc).splitlines()[0]})") from None


class _SequenceRead:
    """read(a, b) -> uint8 codes (b - a,) of bases [a, b) of one record, checked; counts what it read."""

    def __init__(self, record, fasta, name: str, soft_masked_as_bases: bool):
        self.record, self.fasta, self.name = record, fasta, name
        self.table = SEQ_CODE if soft_masked_as_bases else SEQ_CODE_UPPER_ONLY
        self.bases = self.lower = 0  # bases read, and how many of them were lower case

    def __call__(self, a: int, b: int) -> np.ndarray:
        raw = np.frombuffer(self.record[a:b].encode("latin-1"), dtype=np.uint8)
        if len(raw) != b - a:
            raise DataError(f"{self.fasta}: {self.name} ends after {a + len(raw):,} bases, its index says "
                            f"{len(self.record):,} (truncated FASTA?)")
        bad = ~_FASTA_LETTER[raw]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{self.fasta}: {self.name} has byte 0x{raw[i]:02x} at base {a + i:,}, not a sequence "
                            f"letter (corrupt FASTA?)")
        self.bases += len(raw)
        self.lower += int(np.count_nonzero(_LOWER[raw]))
        return self.table[raw]


@contextmanager
def sequence_reader(fasta, chrom: str, *, soft_masked_as_bases: bool = True):
    """(size, read) of one FASTA chromosome: read(a, b) -> uint8 codes (b - a,) of bases [a, b).

    Codes as :data:`prism.shards.SEQ_CODE`: A/C/G/T of either case are bases (soft-masked repeats are
    lower case), N and IUPAC codes -> 4. soft_masked_as_bases=False hard-masks the repeats instead
    (lower case -> 4). A read shorter than asked or holding a byte that is no sequence letter is a
    DataError naming the file; ``read.bases`` and ``read.lower`` count what was read.
    """
    fa = open_fasta(fasta)
    try:
        name = resolve_chrom(chrom, fa.keys(), fasta)
        record = fa[name]
        yield len(record), _SequenceRead(record, fasta, name, soft_masked_as_bases)
    finally:
        fa.close()


def _fill_sequence(fasta, chrom: str, tss: np.ndarray, out: np.ndarray) -> tuple[int, float]:
    """Sequence codes of every window into out (n, W) uint8; returns (the chromosome's length, the
    fraction of the bases read that are lower case)."""
    with sequence_reader(fasta, chrom) as (size, read):
        _windows(read, size, tss, out, N_CODE)
    return size, read.lower / max(1, read.bases)


def open_track(path, kind: str):
    """pyBigWig handle of a bigWig (kind ``bigwig``) or bigBed (``bigbed``); DataError naming the file
    if it is missing, truncated or corrupt (:func:`check_bbi`), or of the other kind."""
    import pyBigWig

    label = BBI_LABEL[kind]
    check_bbi(path, kind)
    try:
        handle = pyBigWig.open(str(path))
    except RuntimeError as exc:
        raise DataError(f"{path}: not a readable {label} ({exc}; truncated or corrupt?)") from None
    if handle is None or not (handle.isBigWig() if kind == "bigwig" else handle.isBigBed()):
        raise DataError(f"{path}: not a readable {label}")
    return handle


def track_reader(handle, path, kind: str, chrom: str, size: int, missing: str = "error"):
    """read(a, b) -> float32 (b - a,) per-base values of one track over [a, b) of `chrom`, 0 <= a < b <= size.

    handle: from :func:`open_track`. bigwig: raw values, NaN (no data) -> 0. bigbed: 1 inside any
    interval, else 0; all intervals of the chromosome are read here at once (``entries``). A file
    without the chromosome (bedToBigBed lists only chromosomes with data) is a DataError naming the
    file and the chromosome, or, with missing="zeros", a logged warning and zeros. A length other than
    `size`, or a data block that fails to decompress, is a DataError naming the file and chromosome.
    """
    try:
        name = resolve_chrom(chrom, handle.chroms(), path)
    except DataError:
        absent_chromosome(path, chrom, handle.chroms(), "track", missing)
        return lambda a, b: np.zeros(b - a, dtype=np.float32)
    length = handle.chroms(name)
    if length != size:
        raise DataError(f"{path}: {name} is {length} bp, the genome says {size} (assembly mismatch?)")
    if kind == "bigwig":

        def read(a, b):
            try:
                values = handle.values(name, a, b, numpy=True)
            except RuntimeError as exc:
                raise DataError(f"{path}: reading {name}:{a}-{b} failed ({exc}; truncated or corrupt bigWig?)") from None
            return np.nan_to_num(values, copy=False, nan=0.0)

        return read
    try:
        entries = handle.entries(name, 0, length, withString=False) or []
    except RuntimeError as exc:
        raise DataError(f"{path}: reading the {name} intervals failed ({exc}; truncated or corrupt bigBed?)") from None
    iv = np.array(entries, dtype=np.int64).reshape(-1, 2)
    order = np.argsort(iv[:, 0], kind="stable")
    starts, ends = iv[order, 0], np.maximum.accumulate(iv[order, 1]) if len(iv) else iv[:, 1]

    def read(a, b):
        # intervals sorted by start with running-max ends: those overlapping [a, b) are contiguous
        i0, i1 = np.searchsorted(ends, a, side="right"), np.searchsorted(starts, b, side="left")
        depth = np.zeros(b - a + 1, dtype=np.int32)
        np.add.at(depth, np.clip(starts[i0:i1] - a, 0, b - a), 1)
        np.add.at(depth, np.clip(ends[i0:i1] - a, 0, b - a), -1)
        return (np.cumsum(depth[:-1]) > 0).astype(np.float32)

    return read


def _fill_track(path, kind: str, chrom: str, size: int, tss: np.ndarray, out: np.ndarray,
                missing: str = "error") -> None:
    """Per-base values of one track (see :func:`track_reader`) in every window, out (n, W) float32."""
    handle = open_track(path, kind)
    try:
        _windows(track_reader(handle, path, kind, chrom, size, missing), size, tss, out, 0.0)
    finally:
        handle.close()
