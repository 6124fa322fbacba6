"""The synthetic mirror: deterministic bytes, real formats and layout, a learnable signal."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyBigWig
import pyfaidx
import pytest

from prism import demo


def _md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def test_two_runs_give_identical_bytes(demo_mirror, tmp_path):
    again = demo.write_mirror(tmp_path / "again", seed=0)
    first = json.loads(Path(demo_mirror["manifest"]).read_text())["files"]
    second = json.loads(Path(again["manifest"]).read_text())["files"]
    assert first.keys() == second.keys()
    for key in ("genome", "split_csv", "halflife_csv", "expression_csv"):
        assert _md5(demo_mirror[key]) == _md5(again[key]), key
    # bigWig (pyBigWig) and .hic (hictkpy) bytes are deterministic too
    assert first == second
    other = demo.write_mirror(tmp_path / "seed1", seed=1)
    assert _md5(other["genome"]) != _md5(demo_mirror["genome"])


def test_layout_metadata_and_manifest(demo_mirror):
    root = Path(demo_mirror["root"])
    manifest = json.loads(Path(demo_mirror["manifest"]).read_text())["files"]
    for rel, info in manifest.items():
        assert _md5(root / rel) == info["md5"] and (root / rel).stat().st_size == info["size"]
    for cell, entry in demo_mirror["cells"].items():
        for mark in ("h3k27ac", "dnase"):
            acc = entry[mark]["accession"]
            assert acc.startswith("ENCFFSY")
            path = root / "encode" / "files" / acc / "@@download" / f"{acc}.bigWig"
            assert str(path) == entry[mark]["path"]
            meta = json.loads((path.parent.parent / "metadata.json").read_text())
            assert meta["accession"] == acc and meta["md5sum"] == _md5(path)
            assert meta["file_size"] == path.stat().st_size
            assert meta["assembly"] == "GRCh38" and meta["file_format"] == "bigWig" and meta["status"] == "released"
            assert meta["output_type"] == "fold change over control"
        acc = entry["hic"]["accession"]
        path = root / "4dn" / "files-processed" / acc / "@@download" / f"{acc}.hic"
        meta = json.loads((path.parent.parent / "metadata.json").read_text())
        assert meta["md5sum"] == _md5(path) and meta["file_size"] == path.stat().st_size
    assert demo_mirror["cells"]["synthA"]["genelist"].endswith("abc/synthA/GeneList.txt")
    assert demo_mirror["cells"]["synthC"]["genelist"] is None
    assert demo_mirror["cells"]["synthC"]["cage_bigwig"].endswith("fantom5/synthC_CAGE.bw")


def test_tables_have_the_real_columns(demo_mirror):
    split = pd.read_csv(demo_mirror["split_csv"])
    assert list(split.columns) == (
        ["ENSID", "chrom"] + [f"fold_{k}" for k in range(1, 13)] + ["fold_enformer", "Gene name"]
    )
    by_chrom = split.groupby("chrom")["fold_11"].unique().to_dict()
    assert {c: list(v) for c, v in by_chrom.items()} == {
        "chr1": ["train"], "chr2": ["train"], "chr3": ["valid"], "chr21": ["valid"], "chr22": ["test"], "chrX": ["test"]
    }
    counts = split["fold_11"].value_counts().to_dict()
    assert counts == demo_mirror["n_genes"] == {"train": 360, "valid": 120, "test": 120}
    hl = pd.read_csv(demo_mirror["halflife_csv"])
    # EPInformer's real layout: gene_id (not ENSID), chromosomes without "chr"
    assert list(hl.columns) == ["chrom", "TSS", "gene_id", "Gene name", "Gene description"] + demo.HALFLIFE_FEATURES
    assert set(hl["chrom"].astype(str)) == {"1", "2", "3", "21", "22", "X"}
    expr = pd.read_csv(demo_mirror["expression_csv"])
    assert list(expr.columns) == ["ENSID", "Gene name", "chrom", "TSS", "synthA_CAGE_128*3_sum", "synthB_CAGE_128*3_sum"]
    gl = pd.read_csv(demo_mirror["cells"]["synthA"]["genelist"], sep="\t")
    assert list(gl.columns) == [
        "chr", "start", "end", "name", "score", "strand", "symbol", "tss", "H3K27ac.RPM.TSS1Kb", "DHS.RPM.TSS1Kb"
    ]
    assert (gl["symbol"] == hl["gene_id"]).all() and (gl["tss"] == hl["TSS"]).all()


def test_genome_is_uppercase_acgtn_in_60_columns(demo_mirror, demo_fasta):
    lines = Path(demo_fasta).read_text().splitlines()
    body = [line for line in lines if not line.startswith(">")]
    assert max(len(line) for line in body) == 60
    assert set("".join(body)) == set("ACGTN")
    fa = pyfaidx.Fasta(str(demo_fasta))
    assert {k: len(fa[k]) for k in fa.keys()} == demo_mirror["chromosomes"]


def test_target_is_learnable_from_motif_and_h3k27ac(demo_mirror, demo_fasta):
    """A linear fit on (motif copies within TSS +-250, mean H3K27ac over TSS +-500) explains the target."""
    hl = pd.read_csv(demo_mirror["halflife_csv"])
    expr = pd.read_csv(demo_mirror["expression_csv"])
    fa = pyfaidx.Fasta(str(demo_fasta))
    bw = pyBigWig.open(demo_mirror["cells"]["synthA"]["h3k27ac"]["path"])
    motif, k27 = [], []
    for chrom, tss in zip("chr" + hl["chrom"].astype(str), hl["TSS"]):
        region = str(fa[chrom][max(0, tss - 250) : tss + 250])
        motif.append(region.count(demo.MOTIF))
        size = bw.chroms(chrom)
        k27.append(np.nan_to_num(bw.values(chrom, max(0, tss - 500), min(size, tss + 500), numpy=True)).mean())
    x = np.column_stack([np.ones(len(hl)), motif, k27])
    y = np.log10(expr["synthA_CAGE_128*3_sum"].to_numpy() + 1.0)
    assert 0.0 <= y.min() and y.max() <= 3.5
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    r = np.corrcoef(x @ coef, y)[0, 1]
    assert r > 0.5, r
    assert coef[1] > 0 and coef[2] > 0


def test_synthA_footprint_bigbed(demo_mirror):
    """ENCODE-style footprint bigBed of synthA: metadata as ENCODE's, intervals readable by pyBigWig."""
    fp = demo_mirror["cells"]["synthA"]["footprints"]
    path = Path(fp["path"])
    assert fp["accession"] == "ENCFFSYA003" and path.name == "ENCFFSYA003.bigBed"
    meta = json.loads((path.parent.parent / "metadata.json").read_text())
    assert meta["file_format"] == "bigBed" and meta["output_type"] == "footprints" and meta["md5sum"] == _md5(path)
    bb = pyBigWig.open(str(path))
    assert bb.isBigBed() and bb.chroms() == demo_mirror["chromosomes"]
    entries = bb.entries("chr22", 0, demo_mirror["chromosomes"]["chr22"])
    assert entries[0][:2] == (0, entries[0][1]) and all(8 <= e - s <= 30 for s, e, _ in entries)
    assert "footprints" not in demo_mirror["cells"]["synthB"]


ABC_COLUMNS = [
    "chr", "start", "end", "name", "class", "normalized_dhs", "normalized_h3K27ac", "activity_base", "DHS.RPM",
    "DHS.RPM.quantile", "H3K27ac.RPM", "H3K27ac.RPM.quantile", "TargetGene", "TargetGeneTSS", "TargetGeneExpression",
    "TargetGenePromoterActivityQuantile", "TargetGeneIsExpressed", "Gene.DHS.RPM", "Gene.DHS.RPM.quantile",
    "Gene.H3K27ac.RPM", "Gene.H3K27ac.RPM.quantile", "Gene.H3K27ac.RPM.TSS1Kb", "Gene.H3K27ac.RPM.quantile.TSS1Kb",
    "Gene.DHS.RPM.TSS1Kb", "Gene.DHS.RPM.quantile.TSS1Kb", "distance", "isSelfPromoter", "powerlaw_contact",
    "powerlaw_contact_reference", "hic_contact", "hic_contact_pl_scaled", "hic_pseudocount",
    "hic_contact_pl_scaled_adj", "ABC.Score.Numerator", "ABC.Score", "powerlaw.Score.Numerator", "powerlaw.Score",
    "CellType",
]


def _abc(demo_mirror, cell):
    import gzip
    import io
    import zipfile

    entry = demo_mirror["cells"][cell]
    with zipfile.ZipFile(entry["abc_zip"]) as zf:
        infos = zf.infolist()
        genelist = zf.read(entry["abc_members"]["genelist"])
        raw = zf.read(entry["abc_members"]["predictions"])
    return infos, genelist, raw, pd.read_csv(io.BytesIO(gzip.decompress(raw)), sep="\t")


def test_abc_zips_are_laid_out_as_zenodo_record_12738705(demo_mirror):
    """synthA/B: ``<run>.zip`` holding ``<run>/DNase_<acc>_Neighborhoods/GeneList.txt`` and
    ``<run>/Gene-enhancer links/EnhancerPredictionsAllPutative.txt.gz`` (ABC v0.2 columns), as the K562 one."""
    root = Path(demo_mirror["root"])
    for cell in ("synthA", "synthB"):
        entry = demo_mirror["cells"][cell]
        run = f"{cell}_DNase_{entry['dnase']['accession']}_hic_{entry['hic']['accession']}_1MB_ABC_nominated"
        assert Path(entry["abc_zip"]) == root / "zenodo/records/12738705/files" / f"{run}.zip"
        assert entry["abc_members"] == {
            "genelist": f"{run}/DNase_{entry['dnase']['accession']}_Neighborhoods/GeneList.txt",
            "predictions": f"{run}/Gene-enhancer links/EnhancerPredictionsAllPutative.txt.gz",
        }
        infos, genelist, raw, table = _abc(demo_mirror, cell)
        assert [i.filename for i in infos] == [
            f"{run}/", f"{run}/DNase_{entry['dnase']['accession']}_Neighborhoods/", entry["abc_members"]["genelist"],
            f"{run}/Gene-enhancer links/", entry["abc_members"]["predictions"], f"__MACOSX/._{run}",
        ]
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
        assert genelist == Path(entry["genelist"]).read_bytes()  # the same GeneList as the plain one
        assert raw[:2] == b"\x1f\x8b" and list(table.columns) == ABC_COLUMNS
        assert (table["CellType"] == cell).all() and table["TargetGeneIsExpressed"].all()
    assert demo_mirror["cells"]["synthC"]["abc_zip"] is None and demo_mirror["cells"]["synthC"]["abc_members"] is None


def test_abc_predictions_follow_the_planted_signals(demo_mirror):
    hl = pd.read_csv(demo_mirror["halflife_csv"])
    for cell, key in (("synthA", "gene_id"), ("synthB", "Gene name")):  # synthB is keyed by gene symbol
        _, _, _, t = _abc(demo_mirror, cell)
        tss = dict(zip(hl[key], hl["TSS"]))
        assert t["TargetGene"].isin(tss).all() and (t["TargetGeneTSS"] == t["TargetGene"].map(tss)).all()
        assert 0.3 < t["TargetGene"].nunique() / len(hl) < 0.7  # only genes ABC calls expressed (quantile >= 0.4)
        assert (t["TargetGenePromoterActivityQuantile"] >= 0.4).all()
        np.testing.assert_allclose(t["distance"], np.abs((t["start"] + t["end"]) / 2 - t["TargetGeneTSS"]), atol=1e-6)
        assert t["distance"].max() < 110_000 and (t["end"] - t["start"] <= 500).all()
        np.testing.assert_allclose(t["activity_base"], np.sqrt(t["DHS.RPM"] * t["H3K27ac.RPM"]), rtol=1e-5, atol=1e-6)
        # *.RPM = 3 x the bigWig's fold change summed over the region / 1000 (the GeneList's scale)
        bws = {m: pyBigWig.open(demo_mirror["cells"][cell][m]["path"]) for m in ("dnase", "h3k27ac")}
        for _, r in t.sample(20, random_state=0).iterrows():
            for m, col in (("dnase", "DHS.RPM"), ("h3k27ac", "H3K27ac.RPM")):
                total = np.nan_to_num(bws[m].values(r["chr"], r["start"], r["end"], numpy=True)).sum()
                assert r[col] == pytest.approx(3 * total / 1000, rel=1e-4, abs=1e-5)
        # promoters (planted DNase peaks) are more accessible than the background
        assert t.loc[t["class"] == "promoter", "DHS.RPM"].median() > 1.5 * t["DHS.RPM"].quantile(0.05)
        # ABC scores: a distribution over each gene's elements; genes failing the Hi-C QC have NaN
        ok = t.dropna(subset=["ABC.Score"])
        np.testing.assert_allclose(ok.groupby("TargetGene")["ABC.Score"].sum(), 1.0, rtol=1e-4)
        failed = t.groupby("TargetGene")["hic_contact"].apply(lambda s: s.isna().all())
        assert failed.sum() >= 1 and t[t["TargetGene"].isin(failed.index[failed])]["ABC.Score"].isna().all()
        # contact decays with distance, as the planted power law
        near = t.loc[t["distance"] < 10_000, "hic_contact"].median()
        far = t.loc[t["distance"] > 80_000, "hic_contact"].median()
        assert near > 3 * far > 0
        assert t["isSelfPromoter"].sum() == t["TargetGene"].nunique()
