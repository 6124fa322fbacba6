"""The per-gene table: joins, splits, target, and the one-line DataError rules."""

from __future__ import annotations

import logging
import zipfile

import numpy as np
import pandas as pd
import pyBigWig
import pytest
from conftest import demo_gene_specs

from prism.genes import COLUMNS, DataError, build_gene_table, read_gene_table, write_gene_table


def _build(mirror, cell="synthA", **overrides):
    expression, promoter = demo_gene_specs(mirror, cell)
    kwargs = dict(
        cell=cell,
        split_csv=mirror["split_csv"],
        halflife_csv=mirror["halflife_csv"],
        expression=expression,
        promoter_activity=promoter,
        chromosomes=None,
    )
    kwargs.update(overrides)
    return build_gene_table(**kwargs)


def test_table_columns_splits_and_target(demo_mirror, tmp_path):
    df = _build(demo_mirror)
    assert list(df.columns) == COLUMNS
    assert len(df) == 600 and df["gene_id"].is_unique
    splits = df.groupby("chrom")["split"].agg(lambda s: set(s)).to_dict()
    assert splits == {
        "chr1": {"train"}, "chr2": {"train"}, "chr3": {"valid"}, "chr21": {"valid"}, "chr22": {"test"}, "chrX": {"test"}
    }
    assert df["split"].value_counts().to_dict() == {"train": 360, "valid": 120, "test": 120}
    np.testing.assert_allclose(df["target"], np.log10(df["cage"] + 1.0))
    expr = pd.read_csv(demo_mirror["expression_csv"]).set_index("ENSID")
    np.testing.assert_allclose(df["cage"], expr.loc[df["gene_id"], "synthA_CAGE_128*3_sum"])
    gl = pd.read_csv(demo_mirror["cells"]["synthA"]["genelist"], sep="\t").set_index("symbol").loc[df["gene_id"]]
    np.testing.assert_allclose(df["promoter_activity"], np.sqrt(gl["H3K27ac.RPM.TSS1Kb"] * gl["DHS.RPM.TSS1Kb"]))
    assert list(df["chrom"].unique()) == ["chr1", "chr2", "chr3", "chr21", "chr22", "chrX"]
    write_gene_table(df, tmp_path / "g.tsv")
    back = read_gene_table(tmp_path / "g.tsv")
    assert back["tss"].dtype == np.int64
    pd.testing.assert_frame_equal(back, df, check_exact=False, rtol=1e-9)


def test_fold_and_chromosome_filter(demo_mirror):
    df = _build(demo_mirror, chromosomes=["21", "chr22"], fold="fold_1")
    assert set(df["chrom"]) == {"chr21", "chr22"}
    split = pd.read_csv(demo_mirror["split_csv"]).set_index("ENSID")
    assert (df["split"].to_numpy() == split.loc[df["gene_id"], "fold_1"].to_numpy()).all()


def test_duplicate_gene_ids_are_an_error(demo_mirror, tmp_path):
    expr = pd.read_csv(demo_mirror["expression_csv"])
    path = tmp_path / "expr.csv"
    pd.concat([expr, expr.iloc[[5]]]).to_csv(path, index=False)
    spec = {"source": "csv_column", "path": str(path), "column": "synthA_CAGE_128*3_sum"}
    with pytest.raises(DataError, match=rf"{path}: duplicate gene ID {expr['ENSID'][5]}") as err:
        _build(demo_mirror, expression=spec)
    assert "\n" not in str(err.value)
    split = pd.read_csv(demo_mirror["split_csv"])
    path = tmp_path / "split.csv"
    pd.concat([split, split.iloc[[0]]]).to_csv(path, index=False)
    with pytest.raises(DataError, match="split.csv: duplicate gene ID ENSG90000000001"):
        _build(demo_mirror, split_csv=path)


def test_missing_gene_is_dropped_with_a_warning(demo_mirror, tmp_path, caplog):
    expr = pd.read_csv(demo_mirror["expression_csv"])
    path = tmp_path / "expr.csv"
    expr.drop(index=[3, 7, 400]).to_csv(path, index=False)
    spec = {"source": "csv_column", "path": str(path), "column": "synthA_CAGE_128*3_sum"}
    with caplog.at_level(logging.WARNING, logger="prism.genes"):
        df = _build(demo_mirror, expression=spec)
    assert len(df) == 597 and not set(expr["ENSID"][[3, 7, 400]]) & set(df["gene_id"])
    assert "dropped 3 of 600 genes absent from" in caplog.text and str(path) in caplog.text


def test_nan_cage_is_dropped(demo_mirror, tmp_path, caplog):
    expr = pd.read_csv(demo_mirror["expression_csv"])
    expr.loc[[1, 2], "synthA_CAGE_128*3_sum"] = np.nan
    path = tmp_path / "expr.csv"
    expr.to_csv(path, index=False)
    spec = {"source": "csv_column", "path": str(path), "column": "synthA_CAGE_128*3_sum"}
    with caplog.at_level(logging.WARNING, logger="prism.genes"):
        df = _build(demo_mirror, expression=spec)
    assert len(df) == 598 and "dropped 2 genes with NaN CAGE" in caplog.text


def test_missing_column_names_column_and_file(demo_mirror):
    spec = {"source": "csv_column", "path": demo_mirror["expression_csv"], "column": "K562_CAGE_128*3_sum"}
    with pytest.raises(DataError, match=r"fromXpresso.csv: missing column 'K562_CAGE_128\*3_sum'"):
        _build(demo_mirror, expression=spec)
    with pytest.raises(DataError, match="missing column 'fold_99'"):
        _build(demo_mirror, fold="fold_99")


def test_ensembl_style_chromosome_names_become_chr(demo_mirror, tmp_path):
    for key in ("split_csv", "halflife_csv"):
        df = pd.read_csv(demo_mirror[key])
        df["chrom"] = df["chrom"].str.replace("chr", "", regex=False)
        df.to_csv(tmp_path / f"{key}.csv", index=False)
    df = _build(demo_mirror, split_csv=tmp_path / "split_csv.csv", halflife_csv=tmp_path / "halflife_csv.csv",
                chromosomes=["chrX", "1"])
    assert set(df["chrom"]) == {"chr1", "chrX"}


def test_genelist_from_zip_member(demo_mirror, tmp_path):
    """A Zenodo-style ABC bundle: the GeneList is one member among folders and other files."""
    bundle = tmp_path / "abc.zip"
    member = "K562_DNase_hic_1MB_ABC_nominated/Neighborhoods/GeneList.txt"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("K562_DNase_hic_1MB_ABC_nominated/", "")
        zf.writestr("K562_DNase_hic_1MB_ABC_nominated/Neighborhoods/EnhancerList.txt", "chr\tstart\tend\n")
        zf.write(demo_mirror["cells"]["synthA"]["genelist"], member)
        zf.write(demo_mirror["cells"]["synthA"]["genelist"], "old_run/GeneList.txt")
    spec = {"source": "abc_genelist", "path": str(bundle), "member": member}
    df = _build(demo_mirror, promoter_activity=spec)
    pd.testing.assert_frame_equal(df, _build(demo_mirror))
    wrong = "K562_DNase_hic_1MB_ABC_nominated/GeneList.txt"
    with pytest.raises(DataError) as err:
        _build(demo_mirror, promoter_activity={**spec, "member": wrong})
    assert str(err.value) == (f"{bundle}: zip has no member {wrong}; its GeneList.txt members: {member}, "
                              "old_run/GeneList.txt")
    with pytest.raises(DataError, match="abc.zip: zip has no member nope.txt; its nope.txt members: none$"):
        _build(demo_mirror, promoter_activity={**spec, "member": "nope.txt"})


def test_bigwig_sum_expression_and_derived_promoter_activity_for_synthC(demo_mirror):
    df = _build(demo_mirror, cell="synthC")
    assert len(df) == 600
    entry = demo_mirror["cells"]["synthC"]
    cage = pyBigWig.open(entry["cage_bigwig"])
    k27 = pyBigWig.open(entry["h3k27ac"]["path"])
    dnase = pyBigWig.open(entry["dnase"]["path"])  # names chromosomes "1", "X"
    for _, g in df.iloc[[0, 250, 599]].iterrows():
        want = np.nansum(cage.values(g.chrom, max(0, g.tss - 192), g.tss + 192, numpy=True))
        assert g.cage == pytest.approx(want, rel=1e-6)
        size = k27.chroms(g.chrom)
        lo, hi = max(0, g.tss - 500), min(size, g.tss + 500)
        h = np.nansum(k27.values(g.chrom, lo, hi, numpy=True)) / 1000
        d = np.nansum(dnase.values(g.chrom.removeprefix("chr"), lo, hi, numpy=True)) / 1000
        assert g.promoter_activity == pytest.approx(np.sqrt(h * d), rel=1e-5)
    # the demo's GeneList values are 3 x the bigWig means: the derivation ranks genes the same way
    ref = _build(demo_mirror, cell="synthA")
    derived = _build(demo_mirror, cell="synthA", promoter_activity={
        "source": "bigwig", "h3k27ac": demo_mirror["cells"]["synthA"]["h3k27ac"]["path"],
        "dnase": demo_mirror["cells"]["synthA"]["dnase"]["path"]})
    np.testing.assert_allclose(ref["promoter_activity"], 3.0 * derived["promoter_activity"], rtol=1e-3)


def test_bigwig_without_the_chromosome_is_an_error(demo_mirror, tmp_path):
    path = tmp_path / "only_chr1.bw"
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader([("chr1", 600123)])
    bw.addEntries(["chr1"], [0], ends=[100], values=[1.0])
    bw.close()
    with pytest.raises(DataError, match=r"only_chr1.bw: chromosome chr2 is missing"):
        _build(demo_mirror, cell="synthC", expression={"source": "bigwig_sum", "path": str(path), "flank": 192})


def test_halflife_csv_keyed_by_ensid_also_reads(demo_mirror, tmp_path):
    """EPInformer's half-life CSV names its ID column gene_id; a copy keyed by ENSID gives the same table."""
    hl = pd.read_csv(demo_mirror["halflife_csv"]).rename(columns={"gene_id": "ENSID"})
    path = tmp_path / "halflife.csv"
    hl.to_csv(path, index=False)
    pd.testing.assert_frame_equal(_build(demo_mirror, halflife_csv=path), _build(demo_mirror))


def test_a_cell_line_without_expression_keeps_every_gene_with_no_target(demo_mirror):
    from conftest import demo_gene_specs

    _, promoter = demo_gene_specs(demo_mirror, "synthC")
    df = build_gene_table(cell="synthD", split_csv=demo_mirror["split_csv"], halflife_csv=demo_mirror["halflife_csv"],
                          expression=None, promoter_activity=promoter, chromosomes=None)
    assert len(df) == sum(demo_mirror["n_genes"].values()) and df["target"].isna().all() and df["cage"].isna().all()
