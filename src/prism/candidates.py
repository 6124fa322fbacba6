"""EPInformer's inputs: per gene, the promoter plus up to 60 candidate enhancers, and their batches.

Selection, as EPInformer builds its inputs (pinellolab/EPInformer ``scripts/utils.py``
``encode_promoter_enhancer_links``; the same in Seq2Exp's ``src/dataloaders/utils/epinformer.py``):
the gene's candidate elements with ``min_distance < distance < max_distance`` (1 kb and 100 kb: the
element's midpoint is outside the 2 kb promoter window and within EPInformer's distance limit), sorted
by increasing distance to the TSS (not by ABC score), the first ``n_elements`` (60) kept. A gene with
fewer keeps what it has; the rest of its 60 slots are padding (all-zero sequence and features,
masked out of the attention). A gene with none keeps only its promoter.

Two sources of candidates:

- :func:`build_candidates_from_abc`: an ABC run's ``EnhancerPredictionsAllPutative`` table (the zips of
  Zenodo record 12738705 hold it at ``<run>/Gene-enhancer links/EnhancerPredictionsAllPutative.txt.gz``).
  Columns used: ``chr`` (or ``#chr``), ``start``, ``end``, ``name``, ``TargetGene``, ``distance``,
  ``activity_base``, ``hic_contact`` and, when present, ``ABC.Score``. ``TargetGene`` is ABC's GeneList
  ``symbol``: the Ensembl ID in the K562 / GM12878 runs, a gene symbol in others (Seq2Exp's H1 run);
  both are matched against the gene table (see :func:`build_candidates_from_abc`). The table lists
  only genes ABC called expressed (``TargetGeneIsExpressed``; the others are in a separate
  ``...NonExpressedGenes`` file EPInformer does not read), so other genes get their promoter alone,
  as in EPInformer.
- :func:`build_candidates_from_peaks`: a cell line with no ABC run. Candidates are its MACS3 DNase
  peaks (:mod:`prism.peaks`); activity is ABC's ``sqrt(DNase x H3K27ac)`` with each mark's mean bigWig
  value over the element; contact is the shards' Hi-C (:mod:`prism.preprocess`: same normalisation,
  resolution and transform) between the TSS's bin and the bin of the element's midpoint.

The table (:func:`write_candidates` / :func:`read_candidates`), one row per element, TSV:

============  ==========================================================================================
column        meaning
============  ==========================================================================================
gene_id       Ensembl ID of the gene (the gene table's)
chrom         ``chrN``
tss           the gene table's TSS, 0-based
rank          0 = the promoter; 1..n = candidates by increasing distance
name          ``promoter``, ABC's element name, or ``chrN:start-end`` for a peak
start, end    element extent [start, end), 0-based; the promoter is [tss - 1000, tss + 1000)
distance      bp from the element's midpoint to the TSS (ABC's ``distance``), 0 for the promoter
activity      ABC's ``activity_base``, or sqrt(mean DNase x mean H3K27ac); 0 for the promoter
hic           log10(1 + contact): ABC's ``hic_contact``, or the shards' transformed contact (which is
              already log10(x + 1)); NaN (ABC's failed Hi-C QC) -> 0; 0 for the promoter
abc_score     ABC's ``ABC.Score`` (NaN without one, and for the promoter)
source        ``abc`` or ``peaks``
============  ==========================================================================================

The promoter's features are 0 because EPInformer feeds its promoter activity as a per-gene feature
(the 9th of :data:`prism.genes.FEATURES`) and its distance/contact as 0. The scales of ``activity``
and ``hic`` differ between the two sources (ABC counts reads per million and KR-normalises its
Hi-C; the bigWigs are fold change, the shards' Hi-C as configured): a cell line is consistent with
itself, not with another cell line's source.

:class:`ElementBatcher` turns the table into a batch's extras (:data:`EXTRA_KEYS`).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import posixpath
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from prism.genes import DataError, chrom_sort_key, normalize_chrom, read_gene_table, resolve_chrom
from prism.peaks import open_bigwig, read_peaks
from prism.preprocess import CHUNK_BP, HIC_QC_FLANK, _read_hic_band, hic_features
from prism.shards import N_CODE, encode_seq, one_hot

log = logging.getLogger(__name__)

#: EPInformer's settings (pinellolab/EPInformer train_EPInformer.py, Seq2Exp configs/dataset/promo_enhan_inter.yaml)
N_ELEMENTS = 60
ELEMENT_LENGTH = 2000
MIN_DISTANCE = 1000  # midpoint outside the promoter window: distance > max_seq_len / 2
MAX_DISTANCE = 100_000
COLUMNS = ["gene_id", "chrom", "tss", "rank", "name", "start", "end", "distance", "activity", "hic", "abc_score", "source"]
#: keys of the extras a batch carries for EPInformer (see ElementBatcher.extras)
EXTRA_KEYS = ("elements_seq", "elements_feat", "elements_mask")
#: file name of ABC's table of all element-gene pairs of expressed genes
ABC_PREDICTIONS = "EnhancerPredictionsAllPutative.txt.gz"
_ABC_COLUMNS = ["start", "end", "name", "TargetGene", "distance", "activity_base", "hic_contact"]
_ABC_CHUNK_ROWS = 1_000_000


# ---------------------------------------------------------------- selection and the table


def _select(pairs: pd.DataFrame, genes: pd.DataFrame, source: str, n_elements: int, min_distance: float,
            max_distance: float, element_length: int) -> pd.DataFrame:
    """Promoter rows for every gene plus each gene's nearest `n_elements` candidates in range.

    pairs: gene_id, start, end, name, distance, activity, hic, abc_score (one row per element-gene pair).
    """
    keep = (pairs["distance"] > min_distance) & (pairs["distance"] < max_distance)
    pairs = pairs[keep].sort_values(["gene_id", "distance", "start", "end", "name"], kind="stable")
    pairs = pairs.groupby("gene_id", sort=False).head(n_elements).copy()
    pairs["rank"] = pairs.groupby("gene_id", sort=False).cumcount() + 1
    half = element_length // 2
    promoters = pd.DataFrame({
        "gene_id": genes["gene_id"].to_numpy(), "rank": 0, "name": "promoter",
        "start": genes["tss"].to_numpy() - half, "end": genes["tss"].to_numpy() + half,
        "distance": 0.0, "activity": 0.0, "hic": 0.0, "abc_score": np.nan,
    })
    info = genes[["gene_id", "chrom", "tss"]]
    table = pd.concat([promoters, pairs.drop(columns=["chrom", "tss"], errors="ignore")], ignore_index=True)
    table = table.merge(info, on="gene_id", how="inner", validate="many_to_one")
    table["source"] = source
    order = {c: i for i, c in enumerate(sorted(info["chrom"].unique(), key=chrom_sort_key))}
    table["_c"] = table["chrom"].map(order)
    table = table.sort_values(["_c", "tss", "gene_id", "rank"], kind="stable").drop(columns="_c")
    table["hic"] = table["hic"].fillna(0.0)  # ABC's failed QC (NaN), as Seq2Exp's loader
    for col in ("tss", "rank", "start", "end"):
        table[col] = table[col].astype(np.int64)
    return table[COLUMNS].reset_index(drop=True)


def write_candidates(table: pd.DataFrame, path) -> None:
    """Write the candidates table as TSV, atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        table[COLUMNS].to_csv(tmp, sep="\t", index=False, lineterminator="\n", float_format="%.10g", na_rep="NaN")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_candidates(path) -> pd.DataFrame:
    """The table written by :func:`write_candidates`; DataError naming the file on a bad one.

    Checks: every column present, each gene has exactly one promoter row (rank 0) and ranks
    0..n without gaps, start < end, distances >= 0.
    """
    try:
        df = pd.read_csv(path, sep="\t", dtype={"gene_id": str, "chrom": str, "name": str, "source": str})
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot parse ({type(exc).__name__})") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: candidates table lacks column {missing[0]!r}")
    for col in ("tss", "rank", "start", "end"):
        if df[col].isna().any() or not np.issubdtype(df[col].dtype, np.integer):
            raise DataError(f"{path}: column {col!r} must hold integers")
    bad = (df["start"] >= df["end"]) | (df["distance"] < 0) | df["distance"].isna()
    if bad.any():
        r = df[bad].iloc[0]
        raise DataError(f"{path}: gene {r.gene_id} element {r['name']} has start {r.start}, end {r.end}, distance {r.distance}")
    ranks = df.groupby("gene_id", sort=False)["rank"]
    ok = (ranks.min() == 0) & (ranks.max() == ranks.count() - 1) & (ranks.nunique() == ranks.count())
    if not ok.all():
        raise DataError(f"{path}: gene {ok.index[~ok.to_numpy()][0]} does not have ranks 0..n (one promoter, no gaps)")
    df["chrom"] = df["chrom"].map(normalize_chrom)
    return df


def candidate_counts(table: pd.DataFrame) -> pd.Series:
    """Candidates (promoter excluded) per gene, indexed by gene_id."""
    return table.groupby("gene_id", sort=False)["rank"].max()


# ---------------------------------------------------------------- source a: an ABC run


def read_abc_predictions(path, member: str | None = None, *, max_distance: float = MAX_DISTANCE) -> pd.DataFrame:
    """The element-gene pairs of an ABC ``EnhancerPredictionsAllPutative`` table with distance < max_distance.

    path: the table (``.txt`` or ``.txt.gz``) or a zip holding it; member: its path inside the zip
    (None: the one member named :data:`ABC_PREDICTIONS` outside ``__MACOSX/``). Streamed and parsed
    in chunks, so a genome-wide table never sits in memory whole. Returns columns chrom (``chrN``),
    start, end, name, TargetGene, distance, activity_base, hic_contact, abc_score.
    """
    label = f"{path}:{member}" if member else str(path)
    try:
        with contextlib.ExitStack() as stack:
            if zipfile.is_zipfile(path):
                zf = stack.enter_context(zipfile.ZipFile(path))
                names = zf.namelist()
                if member is None:
                    found = [m for m in names if posixpath.basename(m) == ABC_PREDICTIONS and not m.startswith("__MACOSX/")]
                    if len(found) != 1:
                        raise DataError(f"{path}: expected one {ABC_PREDICTIONS} member, found {len(found)}: "
                                        f"{', '.join(found) or 'none'}")
                    member = found[0]
                    label = f"{path}:{member}"
                elif member not in names:
                    base = posixpath.basename(member)
                    same = [m for m in names if posixpath.basename(m) == base]
                    raise DataError(f"{path}: zip has no member {member}; its {base} members: {', '.join(same) or 'none'}")
                fh = stack.enter_context(zf.open(member))
            else:
                fh = stack.enter_context(open(path, "rb"))
            fh = stack.enter_context(io.BufferedReader(fh)) if not hasattr(fh, "peek") else fh
            if fh.peek(2)[:2] == b"\x1f\x8b":
                fh = stack.enter_context(gzip.GzipFile(fileobj=fh))
            df = _parse_abc(fh, label, max_distance)
    except FileNotFoundError:
        raise DataError(f"{label}: file not found") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{label}: cannot read ({type(exc).__name__}: {exc})") from None
    df = df.rename(columns={df.columns[0]: "chrom", "ABC.Score": "abc_score"})
    if "abc_score" not in df.columns:
        df["abc_score"] = np.nan
    df = df.dropna(subset=["start", "end", "TargetGene"])
    df["chrom"] = df["chrom"].map(normalize_chrom)
    for col in ("start", "end"):
        df[col] = df[col].astype(np.int64)
    for col in ("distance", "activity_base", "hic_contact", "abc_score"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(np.float64)
    bad = (df["start"] >= df["end"]) | (df["distance"] < 0)
    if bad.any():
        r = df[bad].iloc[0]
        raise DataError(f"{label}: element {r['name']} of {r.TargetGene} has start {r.start}, end {r.end}, distance {r.distance}")
    return df.reset_index(drop=True)


def _parse_abc(fh, label: str, max_distance: float) -> pd.DataFrame:
    """Rows with distance < max_distance of an ABC table from a binary stream, chrom column first."""
    try:
        reader = pd.read_csv(fh, sep="\t", chunksize=_ABC_CHUNK_ROWS, dtype={"TargetGene": str, "name": str})
        parts, usecols = [], None
        for chunk in reader:
            if usecols is None:
                chrom_col = "chr" if "chr" in chunk.columns else "#chr"
                for col in [chrom_col] + _ABC_COLUMNS:
                    if col not in chunk.columns:
                        raise DataError(f"{label}: missing column {col!r}")
                usecols = [chrom_col] + _ABC_COLUMNS + (["ABC.Score"] if "ABC.Score" in chunk.columns else [])
            chunk = chunk[usecols]
            parts.append(chunk[pd.to_numeric(chunk["distance"], errors="coerce") < max_distance])
    except pd.errors.EmptyDataError:
        raise DataError(f"{label}: empty table") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{label}: cannot parse ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not parts:
        raise DataError(f"{label}: empty table")
    df = pd.concat(parts, ignore_index=True)
    df[usecols[0]] = df[usecols[0]].astype(str)
    return df


def _abc_gene_ids(target: pd.Series, genes: pd.DataFrame, label: str) -> pd.Series:
    """TargetGene -> gene_id: by Ensembl ID where the table is keyed so, else by unique gene symbol."""
    keys = pd.Series(target.unique())
    by_id = keys.isin(set(genes["gene_id"])).sum()
    by_name = keys.isin(set(genes["gene_name"])).sum()
    if by_id == 0 and by_name == 0:
        raise DataError(f"{label}: no TargetGene matches a gene ID or gene name of the gene table (e.g. {keys.iat[0]!r})")
    if by_id >= by_name:
        log.info("%s: TargetGene holds Ensembl IDs (%d of %d genes match)", label, by_id, len(keys))
        return target.where(target.isin(set(genes["gene_id"])))
    names = genes["gene_name"]
    ambiguous = set(names[names.duplicated(keep=False)])
    if ambiguous:
        log.warning("%s: %d gene symbols name several genes of the gene table; their elements are dropped",
                    label, len(ambiguous))
    lookup = genes.loc[~names.isin(ambiguous)].set_index("gene_name")["gene_id"]
    log.info("%s: TargetGene holds gene symbols (%d of %d genes match)", label, by_name, len(keys))
    return target.map(lookup)


def build_candidates_from_abc(
    abc,
    genes_tsv,
    out,
    *,
    member: str | None = None,
    n_elements: int = N_ELEMENTS,
    min_distance: float = MIN_DISTANCE,
    max_distance: float = MAX_DISTANCE,
    element_length: int = ELEMENT_LENGTH,
) -> dict:
    """Candidates of every gene of `genes_tsv` from an ABC run's EnhancerPredictionsAllPutative table.

    abc: the ABC zip (member: the table's path inside it, None to find it) or the table itself.
    ``TargetGene`` is matched to the gene table by Ensembl ID when most of its values are gene IDs,
    otherwise by gene symbol (symbols naming several genes of the table are dropped, with a
    warning). Pairs of genes absent from the gene table are ignored; a pair whose element lies on
    another chromosome than the gene is a DataError. Writes `out` (TSV, atomic) and returns
    {"path", "n_genes", "candidates": {"median", "min", "max"}}.
    """
    genes = read_gene_table(genes_tsv)
    label = f"{abc}:{member}" if member else str(abc)
    pairs = read_abc_predictions(abc, member, max_distance=max_distance)
    pairs["gene_id"] = _abc_gene_ids(pairs["TargetGene"], genes, label)
    pairs = pairs.dropna(subset=["gene_id"])
    gene_chrom = pairs["gene_id"].map(genes.set_index("gene_id")["chrom"])
    clash = pairs["chrom"] != gene_chrom
    if clash.any():
        r = pairs[clash].iloc[0]
        raise DataError(f"{label}: element {r['name']} of gene {r.TargetGene} is on {r.chrom}, the gene on {gene_chrom[clash].iat[0]}")
    pairs = pairs.drop_duplicates(["gene_id", "chrom", "start", "end"])
    pairs = pairs.rename(columns={"activity_base": "activity"})
    pairs["hic"] = np.log10(1.0 + pairs["hic_contact"])
    table = _select(pairs[["gene_id", "start", "end", "name", "distance", "activity", "hic", "abc_score"]],
                    genes, "abc", n_elements, min_distance, max_distance, element_length)
    write_candidates(table, out)
    return _summary(out, table)


def _summary(out, table: pd.DataFrame) -> dict:
    counts = candidate_counts(table)
    return {"path": str(out), "n_genes": int(len(counts)),
            "candidates": {"median": float(counts.median()), "min": int(counts.min()), "max": int(counts.max())}}


# ---------------------------------------------------------------- source b: MACS3 DNase peaks


def build_candidates_from_peaks(
    peaks,
    genes_tsv,
    out,
    *,
    h3k27ac,
    dnase,
    hic: dict,
    n_elements: int = N_ELEMENTS,
    min_distance: float = MIN_DISTANCE,
    max_distance: float = MAX_DISTANCE,
    element_length: int = ELEMENT_LENGTH,
) -> dict:
    """Candidates of every gene of `genes_tsv` from the cell line's MACS3 DNase peaks (no ABC run).

    peaks: BED / narrowPeak (:func:`prism.peaks.read_peaks`), each peak one element (midpoint
    (start + end) / 2, as ABC). h3k27ac, dnase: the cell line's bigWigs; activity =
    sqrt(mean H3K27ac x mean DNase over [start, end)), NaN (no data) counted as 0, read once per
    chromosome in stretches. hic: {"path", "normalization", "resolution"} exactly as the shards'
    (:func:`prism.preprocess.build_shard`); contact = the shards' transformed Hi-C between the TSS's
    bin and the bin of the element's midpoint. Writes `out` (TSV, atomic) and returns
    {"path", "n_genes", "candidates": {"median", "min", "max"}}.
    """
    genes = read_gene_table(genes_tsv)
    peak_sets = read_peaks(peaks)
    resolution = int(hic.get("resolution", 5000))
    normalization = str(hic.get("normalization", "VC"))
    reach = int(max_distance // resolution) + 1
    offsets = np.arange(-reach, reach + 1, dtype=np.int64)
    bw = open_bigwig(dnase)
    try:
        dnase_sizes = bw.chroms()
    finally:
        bw.close()
    parts = []
    for chrom in sorted(genes["chrom"].unique(), key=chrom_sort_key):
        iv = peak_sets.get(chrom)
        if iv is None or len(iv) == 0:
            continue
        g = genes[genes["chrom"] == chrom].sort_values("tss", kind="stable")
        tss = g["tss"].to_numpy(np.int64)
        mid = (iv[:, 0] + iv[:, 1]) / 2.0
        order = np.argsort(mid, kind="stable")  # sorted by start; nested peaks can break midpoint order
        iv, mid = iv[order], mid[order]
        lo = np.searchsorted(mid, tss - max_distance, side="right")
        hi = np.searchsorted(mid, tss + max_distance, side="left")
        gi = np.repeat(np.arange(len(g)), hi - lo)  # (pairs,) gene of each pair
        ei = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)]).astype(np.int64)  # (pairs,) its peak
        if len(ei) == 0:
            continue
        size = dnase_sizes[resolve_chrom(chrom, dnase_sizes, dnase)]
        used = np.unique(ei)
        activity = np.zeros(len(iv))
        activity[used] = np.sqrt(interval_means(h3k27ac, chrom, iv[used]) * interval_means(dnase, chrom, iv[used]))
        max_offset = int(max(reach, -(-HIC_QC_FLANK // resolution)))
        band = _read_hic_band(hic["path"], chrom, normalization, resolution, max_offset, size)
        contact = hic_features(band, tss, offsets, resolution)  # (genes, offsets) log10(1 + x), transformed
        col = (np.floor(mid[ei] / resolution).astype(np.int64) - tss[gi] // resolution) + reach
        parts.append(pd.DataFrame({
            "gene_id": g["gene_id"].to_numpy()[gi],
            "start": iv[ei, 0], "end": iv[ei, 1],
            "name": [f"{chrom}:{s}-{e}" for s, e in iv[ei]],
            "distance": np.abs(mid[ei] - tss[gi]),
            "activity": activity[ei],
            "hic": contact[gi, col].astype(np.float64),
            "abc_score": np.nan,
        }))
    pairs = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["gene_id", "start", "end", "name", "distance", "activity", "hic", "abc_score"])
    table = _select(pairs, genes, "peaks", n_elements, min_distance, max_distance, element_length)
    write_candidates(table, out)
    return _summary(out, table)


def interval_means(path, chrom: str, intervals: np.ndarray) -> np.ndarray:
    """Mean bigWig value over each [start, end) of `intervals` (k, 2) on `chrom` (NaN and past-the-end as 0).

    The chromosome is read in stretches (about :data:`prism.preprocess.CHUNK_BP` bases each), each
    stretch once; intervals are grouped by the stretch their start falls in.
    """
    iv = np.asarray(intervals, dtype=np.int64).reshape(-1, 2)
    out = np.zeros(len(iv), dtype=np.float64)
    if len(iv) == 0:
        return out
    bw = open_bigwig(path)
    try:
        name = resolve_chrom(chrom, bw.chroms(), path)
        size = bw.chroms(name)
        key = iv[:, 0] // CHUNK_BP
        for k in np.unique(key):
            sel = np.flatnonzero(key == k)
            a, b = int(max(iv[sel, 0].min(), 0)), int(min(iv[sel, 1].max(), size))
            if a >= b:
                continue
            values = np.nan_to_num(bw.values(name, a, b, numpy=True), nan=0.0)
            csum = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
            s = np.clip(iv[sel, 0] - a, 0, b - a)
            e = np.clip(iv[sel, 1] - a, 0, b - a)
            out[sel] = (csum[e] - csum[s]) / (iv[sel, 1] - iv[sel, 0])
    finally:
        bw.close()
    return out


# ---------------------------------------------------------------- batches


class FastaCodes:
    """``read_codes(chrom, start, end)`` backed by pyfaidx: uint8 sequence codes of [start, end).

    Codes as :mod:`prism.shards` (A0 C1 G2 T3, anything else 4); bases before 0 or past the
    chromosome's end are 4 (N). Our ``chrN`` is mapped to the FASTA's naming.
    """

    def __init__(self, fasta):
        import pyfaidx

        try:
            self._fa = pyfaidx.Fasta(str(fasta), as_raw=True, sequence_always_upper=False)
        except (pyfaidx.UnsupportedCompressionFormat, FileNotFoundError, ValueError) as exc:
            raise DataError(f"{fasta}: cannot index FASTA ({str(exc).splitlines()[0]})") from None
        self._path = fasta
        self._names = {}

    def __call__(self, chrom: str, start: int, end: int) -> np.ndarray:
        if chrom not in self._names:
            self._names[chrom] = resolve_chrom(chrom, self._fa.keys(), self._path)
        record = self._fa[self._names[chrom]]
        out = np.full(end - start, N_CODE, dtype=np.uint8)
        a, b = max(start, 0), min(end, len(record))
        if a < b:
            out[a - start : b - start] = encode_seq(record[a:b].encode("ascii"))
        return out

    def close(self) -> None:
        self._fa.close()


class ElementBatcher:
    """Batch extras for EPInformer from the candidates table, the gene table and a sequence reader.

    candidates: a table from :func:`read_candidates` (or its path); genes: the gene table
    (:func:`prism.genes.read_gene_table`) whose genes must all be in it with the same chromosome and
    TSS; read_codes(chrom, start, end) -> (end - start,) uint8 codes (:class:`FastaCodes` or a
    faster reader with that signature). Element e of a gene (e = 0: the promoter) is placed as
    EPInformer does (``add_flanking=False``): an element longer than `element_length` is cut to the
    `element_length` bases centred on int((start + end) / 2); a shorter one is written at offset
    element_length / 2 - int(length / 2) and the rest of its window left N (all-zero one-hot).

    :meth:`extras` returns, for B genes and E = 1 + n_elements slots:

    - ``elements_seq`` (B, E, element_length, 4) float32 one-hot (N = zeros); slot 0 the promoter,
      slots 1..n the candidates by increasing distance, then all-zero padding;
    - ``elements_feat`` (B, E, 3) float32: (distance / 1000 in kb, hic, activity), 0 for the promoter
      and for padding (EPInformer's n_extraFeat = 3 order);
    - ``elements_mask`` (B, E) bool: True where a slot holds an element with at least one base
      (EPInformer masks slots whose one-hot is all zero); the promoter is always True.
    """

    def __init__(self, candidates, genes: pd.DataFrame, read_codes, *, n_elements: int = N_ELEMENTS,
                 element_length: int = ELEMENT_LENGTH):
        table = read_candidates(candidates) if isinstance(candidates, (str, os.PathLike)) else candidates
        label = str(candidates) if isinstance(candidates, (str, os.PathLike)) else "candidates table"
        if element_length <= 0 or element_length % 2:
            raise ValueError(f"element_length must be a positive even number, got {element_length}")
        self.n_elements, self.element_length, self.read_codes = int(n_elements), int(element_length), read_codes
        table = table[table["rank"] <= self.n_elements].sort_values(["gene_id", "rank"], kind="stable")
        promoters = table[table["rank"] == 0].set_index("gene_id")
        missing = genes.loc[~genes["gene_id"].isin(promoters.index), "gene_id"]
        if len(missing):
            raise DataError(f"{label}: gene {missing.iat[0]} of the gene table has no candidates (no promoter row)")
        g = genes.set_index("gene_id")
        p = promoters.loc[g.index]
        clash = (p["chrom"].map(normalize_chrom) != g["chrom"]) | (p["tss"] != g["tss"])
        if clash.any():
            gid = clash.index[clash.to_numpy()][0]
            raise DataError(f"{label}: gene {gid} is at {p.at[gid, 'chrom']}:{p.at[gid, 'tss']} here, "
                            f"{g.at[gid, 'chrom']}:{g.at[gid, 'tss']} in the gene table")
        table = table[table["gene_id"].isin(g.index)]
        # per gene: the slice of its rows (rank order) in these arrays
        self._gene = {gid: i for i, gid in enumerate(pd.unique(table["gene_id"]))}
        first = table.groupby("gene_id", sort=False).cumcount().to_numpy() == 0
        self._first = np.flatnonzero(first)
        self._count = np.diff(np.r_[self._first, len(table)])
        self._chrom = table["chrom"].map(normalize_chrom).to_numpy()
        start, end = table["start"].to_numpy(np.int64), table["end"].to_numpy(np.int64)
        length = end - start
        half = self.element_length // 2
        long = length > self.element_length
        centre = (start + end) // 2
        self._read_start = np.where(long, centre - half, start)  # genomic first base read
        self._read_len = np.where(long, self.element_length, length)
        self._offset = np.where(long, 0, half - length // 2)  # where it lands in the window
        feat = np.column_stack([table["distance"].to_numpy(np.float64) / 1000.0,
                                np.nan_to_num(table["hic"].to_numpy(np.float64)),
                                np.nan_to_num(table["activity"].to_numpy(np.float64))])
        feat[table["rank"].to_numpy() == 0] = 0.0  # EPInformer: the promoter's extra features are 0
        self._feat = feat.astype(np.float32)

    def extras(self, gene_ids) -> dict:
        """{"elements_seq", "elements_feat", "elements_mask"} torch tensors for these genes (see the class)."""
        import torch

        gene_ids = list(gene_ids)
        B, E, L = len(gene_ids), 1 + self.n_elements, self.element_length
        codes = np.full((B, E, L), N_CODE, dtype=np.uint8)
        feat = np.zeros((B, E, 3), dtype=np.float32)
        present = np.zeros((B, E), dtype=bool)
        for b, gid in enumerate(gene_ids):
            try:
                i = self._gene[gid]
            except KeyError:
                raise DataError(f"candidates: gene {gid} is not in the candidates table") from None
            rows = np.arange(self._first[i], self._first[i] + self._count[i])
            for e, r in enumerate(rows):
                o, n = int(self._offset[r]), int(self._read_len[r])
                s = int(self._read_start[r])
                codes[b, e, o : o + n] = self.read_codes(self._chrom[r], s, s + n)
            feat[b, : len(rows)] = self._feat[rows]
            present[b, : len(rows)] = True
        mask = present & (codes < N_CODE).any(axis=-1)
        mask[:, 0] = True  # the promoter token is always attended (it carries the prediction)
        # (B, E, L, 4) one-hot, (B, E, 3) features, (B, E) mask
        return dict(zip(EXTRA_KEYS, (torch.from_numpy(one_hot(codes)), torch.from_numpy(feat), torch.from_numpy(mask))))
