"""The per-gene table of one cell line: identity, TSS, split, target and the 9 extra features.

One row per gene, columns (see :data:`COLUMNS`)::

    gene_id, gene_name, chrom, tss, split, target, cage,
    UTR5LEN_log10zscore, CDSLEN_log10zscore, INTRONLEN_log10zscore, UTR3LEN_log10zscore,
    UTR5GC, CDSGC, UTR3GC, ORFEXONDENSITY, promoter_activity

- ``gene_id``/``gene_name``/``chrom``: the split CSV (EPInformer); chromosomes are always written
  ``chrN`` (``1`` in any input is read as ``chr1``).
- ``tss``: 0-based, from the ``TSS`` column of the half-life CSV (the same TSS the ABC GeneList
  carries, DATA.md); strand is ignored downstream.
- ``split``: the chosen fold column (``fold_11`` in the paper: valid = chr3+chr21, test = chr22+chrX).
- ``cage``: raw CAGE; ``target = log10(cage + 1)``.
- 8 mRNA half-life features, raw; ``promoter_activity``, raw (no log).

Rules for bad or partial input (each error is one line naming the file and the gene or column):

- a duplicate gene ID in any input, a missing column, a split value other than
  train/valid/test, a TSS outside its chromosome: :class:`DataError`;
- a gene of the split CSV absent from the expression source, the half-life CSV or the ABC
  GeneList is DROPPED, with one logged warning per source counting the dropped genes (the
  reference code keeps only genes present everywhere: an inner join);
- a gene whose CAGE is NaN is dropped (warning with the count);
- genes on chromosomes outside ``chromosomes`` (or absent from the genome) are dropped.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

HALFLIFE_FEATURES = [
    "UTR5LEN_log10zscore",
    "CDSLEN_log10zscore",
    "INTRONLEN_log10zscore",
    "UTR3LEN_log10zscore",
    "UTR5GC",
    "CDSGC",
    "UTR3GC",
    "ORFEXONDENSITY",
]
#: the 9 per-gene features, in model order
FEATURES = HALFLIFE_FEATURES + ["promoter_activity"]
COLUMNS = ["gene_id", "gene_name", "chrom", "tss", "split", "target", "cage"] + FEATURES
SPLITS = ("train", "valid", "test")


class DataError(ValueError):
    """Bad input data; the message is one line naming the file and the gene, column or chromosome."""


# ---------------------------------------------------------------- chromosome names


def normalize_chrom(name) -> str:
    """Our spelling of a chromosome: ``1`` / ``chr1`` -> ``chr1``, ``X`` -> ``chrX``, ``MT`` -> ``chrM``."""
    s = str(name).strip()
    if s.lower().startswith("chr"):
        s = s[3:]
    if s in ("MT", "M"):
        s = "M"
    return "chr" + s


def resolve_chrom(chrom: str, available, path) -> str:
    """The name `path` uses for our chromosome `chrom` (``chr1`` or ``1``); DataError if neither."""
    available = set(available)
    if chrom in available:
        return chrom
    for alt in (chrom[3:] if chrom.startswith("chr") else "chr" + chrom, "MT" if chrom == "chrM" else None):
        if alt and alt in available:
            return alt
    raise DataError(f"{path}: chromosome {chrom} is missing (file has {len(available)} chromosomes)")


def chrom_sort_key(chrom: str):
    """Natural order chr1..chr22, chrX, chrY, chrM, then anything else by name."""
    s = chrom[3:] if chrom.startswith("chr") else chrom
    if s.isdigit():
        return (0, int(s), "")
    return (1, {"X": 0, "Y": 1, "M": 2}.get(s, 3), s)


# ---------------------------------------------------------------- the table


def build_gene_table(
    *,
    cell: str,
    split_csv,
    halflife_csv,
    fold: str = "fold_11",
    expression: dict | None,
    promoter_activity: dict,
    chromosomes: list[str] | None = None,
    genome_fai_or_sizes=None,
) -> pd.DataFrame:
    """Join split, half-life features, expression and promoter activity of `cell` into one table.

    expression:
      ``{"source": "csv_column", "path": csv, "column": "K562_CAGE_128*3_sum"}`` (joined on ENSID), or
      ``{"source": "bigwig_sum", "path": CAGE bigWig, "flank": 192}``: sum of the bigWig over
      [tss - flank, tss + flank) (NaN -> 0), as the reference does for H1 (FANTOM5); or None for a cell
      line without expression (predictions only): ``cage`` and ``target`` are NaN for every gene.
    promoter_activity:
      ``{"source": "abc_genelist", "path": GeneList.txt or .zip, "member": path inside the zip}``:
      ``sqrt(H3K27ac.RPM.TSS1Kb * DHS.RPM.TSS1Kb)``, joined on ``symbol`` == ENSID; or
      ``{"source": "bigwig", "h3k27ac": path, "dnase": path, "flank": 500}``: our derivation
      for a cell line without an ABC run, see :func:`promoter_activity_from_bigwigs`.
    chromosomes: keep only genes on these (``chrN`` or ``N``); None keeps all.
    genome_fai_or_sizes: optional ``.fai`` / two-column sizes file / {chrom: length}; genes on
      chromosomes absent from it are dropped and a TSS outside its chromosome is a DataError.

    Returns a DataFrame with :data:`COLUMNS`, sorted by chromosome then TSS (``tss`` int64).
    """
    split = _read_table(split_csv, ["ENSID", "chrom", fold, "Gene name"], key="ENSID")
    split = split.rename(columns={"ENSID": "gene_id", "Gene name": "gene_name", fold: "split"})
    split["chrom"] = split["chrom"].map(normalize_chrom)
    bad = ~split["split"].isin(SPLITS)
    if bad.any():
        gid = split.loc[bad, "gene_id"].iat[0]
        raise DataError(f"{split_csv}: gene {gid} has {fold}={split.loc[bad, 'split'].iat[0]!r}, not train/valid/test")
    table = split[["gene_id", "gene_name", "chrom", "split"]]

    if chromosomes is not None:
        wanted = {normalize_chrom(c) for c in chromosomes}
        table = table[table["chrom"].isin(wanted)]
    sizes = _read_sizes(genome_fai_or_sizes) if genome_fai_or_sizes is not None else None
    if sizes is not None:
        off = ~table["chrom"].isin(sizes)
        if off.any():
            log.warning("%s: dropped %d genes on chromosomes absent from %s", cell, int(off.sum()), genome_fai_or_sizes)
            table = table[~off]

    # EPInformer's file names its ID column gene_id (chrom,TSS,gene_id,Gene name,...); ENSID is accepted too
    hl_key = "gene_id" if "gene_id" in _header(halflife_csv) else "ENSID"
    hl = _read_table(halflife_csv, [hl_key, "chrom", "TSS"] + HALFLIFE_FEATURES, key=hl_key)
    hl = hl.rename(columns={hl_key: "gene_id"})
    hl["chrom"] = hl["chrom"].map(normalize_chrom)
    table = _inner(table, hl.rename(columns={"chrom": "hl_chrom", "TSS": "tss"}), halflife_csv, cell)
    clash = table["chrom"] != table["hl_chrom"]
    if clash.any():
        r = table[clash].iloc[0]
        raise DataError(f"{halflife_csv}: gene {r.gene_id} is on {r.hl_chrom} here but on {r.chrom} in {split_csv}")
    table = table.drop(columns="hl_chrom")
    table["tss"] = table["tss"].astype(np.int64)
    if sizes is not None:
        length = table["chrom"].map(sizes)
        out = (table["tss"] < 0) | (table["tss"] >= length)
        if out.any():
            r = table[out].iloc[0]
            raise DataError(f"{halflife_csv}: gene {r.gene_id} TSS {r.tss} is outside {r.chrom} (length {sizes[r.chrom]})")

    if expression is None:  # a cell line to predict for: no target, no gene dropped for want of one
        table = table.assign(cage=np.nan)
    else:
        table = _add_expression(table, expression, cell)
    table = _add_promoter_activity(table, promoter_activity, cell)

    table = table.copy()
    table["target"] = np.log10(table["cage"].astype(float) + 1.0)
    order = {c: i for i, c in enumerate(sorted(table["chrom"].unique(), key=chrom_sort_key))}
    table["_rank"] = table["chrom"].map(order)
    table = table.sort_values(["_rank", "tss", "gene_id"], kind="stable")
    return table[COLUMNS].reset_index(drop=True)


def write_gene_table(df: pd.DataFrame, path) -> None:
    """Write the table as TSV (atomic: temp file then rename), floats with 10 significant digits."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df[COLUMNS].to_csv(tmp, sep="\t", index=False, lineterminator="\n", float_format="%.10g")
    os.replace(tmp, path)


def read_gene_table(path) -> pd.DataFrame:
    """Read a table written by :func:`write_gene_table` (``gene_id`` str, ``tss`` int64)."""
    df = pd.read_csv(path, sep="\t", dtype={"gene_id": str, "gene_name": str, "chrom": str, "split": str})
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: gene table lacks column {missing[0]}")
    df["tss"] = df["tss"].astype(np.int64)
    return df


# ---------------------------------------------------------------- sources


def _add_expression(table: pd.DataFrame, spec: dict, cell: str) -> pd.DataFrame:
    source = spec.get("source")
    if source == "csv_column":
        col = spec["column"]
        expr = _read_table(spec["path"], ["ENSID", col], key="ENSID")
        expr = expr[["ENSID", col]].rename(columns={"ENSID": "gene_id", col: "cage"})
        expr["cage"] = pd.to_numeric(expr["cage"], errors="coerce")
        table = _inner(table, expr, spec["path"], cell)
    elif source == "bigwig_sum":
        flank = int(spec.get("flank", 192))
        table = table.copy()
        table["cage"] = bigwig_window_sums(spec["path"], table["chrom"], table["tss"], flank)
    else:
        raise DataError(f"expression source {source!r} for {cell} is not csv_column or bigwig_sum")
    nan = table["cage"].isna()
    if nan.any():
        log.warning("%s: dropped %d genes with NaN CAGE in %s", cell, int(nan.sum()), spec["path"])
        table = table[~nan]
    neg = table["cage"] < 0
    if neg.any():
        r = table[neg].iloc[0]
        raise DataError(f"{spec['path']}: gene {r.gene_id} has negative CAGE {r.cage}")
    return table


def _add_promoter_activity(table: pd.DataFrame, spec: dict, cell: str) -> pd.DataFrame:
    source = spec.get("source")
    if source == "abc_genelist":
        path = spec["path"]
        label = f"{path}:{spec['member']}" if spec.get("member") else str(path)
        cols = ["symbol", "H3K27ac.RPM.TSS1Kb", "DHS.RPM.TSS1Kb"]
        gl = _read_table(path, cols, key="symbol", sep="\t", member=spec.get("member"))
        # ABC's promoter activity: geometric mean of promoter H3K27ac and DHS reads per million
        gl["promoter_activity"] = np.sqrt(
            gl["H3K27ac.RPM.TSS1Kb"].astype(float) * gl["DHS.RPM.TSS1Kb"].astype(float)
        )
        gl = gl[["symbol", "promoter_activity"]].rename(columns={"symbol": "gene_id"})
        return _inner(table, gl, label, cell)
    if source == "bigwig":
        table = table.copy()
        table["promoter_activity"] = promoter_activity_from_bigwigs(
            spec["h3k27ac"], spec["dnase"], table["chrom"], table["tss"], int(spec.get("flank", 500))
        )
        return table
    raise DataError(f"promoter_activity source {source!r} for {cell} is not abc_genelist or bigwig")


def promoter_activity_from_bigwigs(h3k27ac, dnase, chroms, tss, flank: int = 500) -> np.ndarray:
    """Promoter activity of a cell line without an ABC run (our documented derivation).

    ``sqrt(mean H3K27ac over [tss - flank, tss + flank) * mean DNase over the same bases)``, each
    mean taken over all 2 * flank bases with NaN (no data, or past a chromosome end) counted as 0.

    Scaling: ABC's ``*.RPM.TSS1Kb`` are reads per million in the same 1 kb; a bigWig carries
    fold change (or another normalised signal), so this value is in the bigWig's own units, not
    RPM, and NOT rescaled: it ranks genes as the ABC value does (geometric mean of the two marks
    at the promoter) but is not on the same absolute scale as an ABC-derived column of another
    cell line. In the demo mirror the GeneList columns are 3 x these means, so the ABC value is
    3 x this one.
    """
    h = bigwig_window_sums(h3k27ac, chroms, tss, flank) / (2.0 * flank)
    d = bigwig_window_sums(dnase, chroms, tss, flank) / (2.0 * flank)
    return np.sqrt(h * d)


def bigwig_window_sums(path, chroms, tss, flank: int) -> np.ndarray:
    """Sum of a bigWig over [tss - flank, tss + flank) per gene (NaN -> 0; bases past the ends add 0).

    Reads each needed chromosome once, in bulk, with the checked readers of :mod:`prism.preprocess`
    (a truncated or corrupt file, or a chromosome it lacks, is a DataError naming the file). Our
    ``chrN`` is mapped to the file's naming.
    """
    from prism.preprocess import open_track, track_reader

    chroms = np.asarray(chroms, dtype=object)
    tss = np.asarray(tss, dtype=np.int64)
    out = np.zeros(len(tss), dtype=np.float64)
    bw = open_track(path, "bigwig")
    try:
        sizes = bw.chroms()
        for chrom in sorted(set(chroms), key=chrom_sort_key):
            size = sizes[resolve_chrom(chrom, sizes, path)]
            values = track_reader(bw, path, "bigwig", chrom, size)(0, size)
            csum = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
            idx = np.flatnonzero(chroms == chrom)
            lo = np.clip(tss[idx] - flank, 0, size)
            hi = np.clip(tss[idx] + flank, 0, size)
            out[idx] = csum[hi] - csum[lo]
            del values, csum
    finally:
        bw.close()
    return out


# ---------------------------------------------------------------- reading helpers


def _header(path, sep=",") -> list[str]:
    """Column names of a CSV (an unreadable file is left for _read_table to report)."""
    try:
        return list(pd.read_csv(path, sep=sep, nrows=0).columns)
    except (OSError, ValueError):
        return []


def _read_table(path, columns, *, key, sep=",", member=None) -> pd.DataFrame:
    """Read a CSV/TSV (or a member of a zip), check the columns, refuse duplicate keys."""
    label = f"{path}:{member}" if member else str(path)
    try:
        if member:
            with zipfile.ZipFile(path) as zf:
                if member not in zf.namelist():
                    # list the members of the same file name (an ABC bundle holds one GeneList.txt per run)
                    base = posixpath.basename(member)
                    found = [m for m in zf.namelist() if posixpath.basename(m) == base]
                    raise DataError(f"{path}: zip has no member {member}; its {base} members: "
                                    f"{', '.join(found) if found else 'none'}")
                df = pd.read_csv(io.BytesIO(zf.read(member)), sep=sep, dtype={key: str})
        else:
            df = pd.read_csv(path, sep=sep, dtype={key: str})
    except FileNotFoundError:
        raise DataError(f"{label}: file not found") from None
    except (pd.errors.ParserError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise DataError(f"{label}: cannot parse ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if key not in df.columns and df.columns[0].startswith("Unnamed"):
        df = df.rename(columns={df.columns[0]: key})  # index written without a header
    for col in columns:
        if col not in df.columns:
            raise DataError(f"{label}: missing column {col!r}")
    df[key] = df[key].astype(str).str.strip()
    dup = df[key].duplicated()
    if dup.any():
        raise DataError(f"{label}: duplicate gene ID {df.loc[dup, key].iat[0]} in column {key}")
    return df


def _inner(table: pd.DataFrame, other: pd.DataFrame, path, cell: str) -> pd.DataFrame:
    merged = table.merge(other, on="gene_id", how="inner")
    lost = len(table) - len(merged)
    if lost:
        log.warning("%s: dropped %d of %d genes absent from %s", cell, lost, len(table), path)
    return merged


def _read_sizes(src) -> dict[str, int]:
    if isinstance(src, dict):
        return {normalize_chrom(k): int(v) for k, v in src.items()}
    sizes = {}
    with open(src) as fh:
        for line in fh:
            parts = re.split(r"\s+", line.strip())
            if len(parts) >= 2 and parts[1].isdigit():
                sizes[normalize_chrom(parts[0])] = int(parts[1])
    if not sizes:
        raise DataError(f"{src}: no chromosome sizes found")
    return sizes
