"""Extra signals (Appendix H): a bigBed signal (DNase footprints) as a 0/1 shard track, wired from the
config through the plan and the downloader; chunked reads; bigWig NaN runs."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import jsonschema
import numpy as np
import pyBigWig
import pytest
import yaml

from prism import preprocess
from prism.download import AssetSpec, fetch
from prism.genes import DataError
from prism.plan import Plan, expand_workdir
from prism.preprocess import build_shard
from prism.shards import read_shard

ROOT = Path(__file__).resolve().parents[1]
W = 2000


def _coverage(bb, chrom: str, start: int, end: int, size: int) -> np.ndarray:
    """0/1 per base of [start, end) written out from the bigBed's intervals, 0 past the ends."""
    want = np.zeros(end - start, dtype=np.float32)
    for s, e in bb.entries(chrom, max(start, 0), min(end, size), withString=False) or []:
        want[max(s, start) - start : min(e, end) - start] = 1.0
    return want


@pytest.fixture(scope="module")
def footprint_plan(demo_mirror, tmp_path_factory):
    """The demo config with synthA's footprints bigBed added, planned against the session mirror."""
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["cell_lines"]["synthA"]["signals"] = {k: v for k, v in cfg["cell_lines"]["synthA"]["signals"].items()
                                              if k in ("h3k27ac", "dnase", "hic")}
    cfg["cell_lines"]["synthA"]["signals"]["footprints"] = {
        "encode": "ENCFFSYA003", "kind": "bigbed", "expect": {"output_type": "footprints"}}
    for t in ("table11", "table12"):  # they use the extra signals taken out above
        cfg["experiments"].pop(t)
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    jsonschema.validate(cfg, schema)
    workdir = tmp_path_factory.mktemp("work")
    (workdir / "mirror").symlink_to(demo_mirror["root"])
    return Plan(cfg, workdir=str(workdir)), cfg, workdir


def test_footprints_are_wired_from_config_to_shard(footprint_plan, demo_mirror, demo_fasta, demo_gene_tables):
    plan, _, workdir = footprint_plan
    tracks = plan.tracks("synthA")
    assert list(tracks) == ["h3k27ac", "dnase", "footprints"]
    assert tracks["footprints"] == ("resources/encode/ENCFFSYA003.bigBed", "bigbed")
    assert plan.bigwig_tracks("synthA").keys() == {"h3k27ac", "dnase"}
    # download each track as the workflow does: metadata md5/size and expect fields verified
    local = {}
    for name, (rel, kind) in tracks.items():
        a = expand_workdir(plan.assets[rel].as_params(), str(workdir))
        fetch(AssetSpec(a["url"], a["md5"], a["size"], a["metadata_url"], a["expect"]), workdir / rel,
              log=lambda msg: None)
        local[name] = (str(workdir / rel), kind)
    out = workdir / "results" / "shards" / "synthA" / "chr22.npz"
    build_shard(genes_tsv=demo_gene_tables["synthA"], chrom="chr22", fasta=demo_fasta, tracks=local, hic=None,
                window=W, out=out)
    s = read_shard(out)
    assert list(s["track_names"]) == ["h3k27ac", "dnase", "footprints"]
    fp = s["tracks"][:, 2]
    assert set(np.unique(fp)) == {0.0, 1.0} and fp.mean() > 0.005
    bb = pyBigWig.open(local["footprints"][0])
    size = demo_mirror["chromosomes"]["chr22"]
    for i, t in enumerate(s["tss"]):
        np.testing.assert_array_equal(fp[i], _coverage(bb, "chr22", int(t) - W // 2, int(t) + W // 2, size))
    # the first TSS sits 350 bp from the start, where the demo puts a footprint at base 0
    assert s["tss"][0] == 350 and (fp[0, : W // 2 - 350] == 0).all() and fp[0, W // 2 - 350] == 1.0


def test_chunked_reads_equal_one_stretch(demo_mirror, demo_fasta, demo_gene_tables, tmp_path, monkeypatch):
    entry = demo_mirror["cells"]["synthA"]
    tracks = {"h3k27ac": entry["h3k27ac"]["path"], "footprints": (entry["footprints"]["path"], "bigbed")}
    hic = {"path": entry["hic"]["path"], "normalization": "NONE", "resolution": 5000}
    kw = {"genes_tsv": demo_gene_tables["synthA"], "chrom": "chr1", "fasta": demo_fasta, "tracks": tracks,
          "hic": hic, "window": W}
    build_shard(**kw, out=tmp_path / "whole.npz")
    monkeypatch.setattr(preprocess, "CHUNK_BP", 7_000)  # most genes in a stretch of their own
    monkeypatch.setattr(preprocess, "HIC_CHUNK_BINS", 7)
    build_shard(**kw, out=tmp_path / "chunked.npz")
    a, b = read_shard(tmp_path / "whole.npz"), read_shard(tmp_path / "chunked.npz")
    for key in ("gene_id", "tss", "seq", "tracks", "hic"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_bigbed_without_the_chromosome_is_an_error_or_explicitly_zero(demo_mirror, demo_fasta, demo_gene_tables,
                                                                        tmp_path, caplog):
    from prism.demo import write_bigbed

    path = tmp_path / "chr1_only.bb"
    write_bigbed(path, {"chr1": demo_mirror["chromosomes"]["chr1"]}, {"chr1": np.array([[10, 20]])})
    kw = dict(genes_tsv=demo_gene_tables["synthA"], chrom="chr22", fasta=demo_fasta,
              tracks={"footprints": (str(path), "bigbed")}, hic=None, window=W, out=tmp_path / "x.npz")
    with pytest.raises(DataError, match=r"chr1_only.bb: chromosome chr22 is missing \(file has 1 chromosomes\), "
                                        r"but genes on chr22 need its track$"):
        build_shard(**kw)
    assert not (tmp_path / "x.npz").exists()
    with caplog.at_level(logging.WARNING, logger="prism.preprocess"):
        build_shard(**kw, missing="zeros")
    assert (read_shard(tmp_path / "x.npz")["tracks"] == 0).all()
    assert "chr1_only.bb: chromosome chr22 is missing: its track is all 0 (missing='zeros')" in caplog.text


def test_wrong_file_kind_is_a_one_line_error(demo_mirror, demo_fasta, demo_gene_tables, tmp_path):
    entry = demo_mirror["cells"]["synthA"]
    kw = {"genes_tsv": demo_gene_tables["synthA"], "chrom": "chr22", "fasta": demo_fasta, "hic": None, "window": W,
          "out": tmp_path / "x.npz"}
    with pytest.raises(DataError, match=r"ENCFFSYA003.bigBed: not a readable bigWig \(it is a bigBed\)$"):
        build_shard(tracks={"footprints": entry["footprints"]["path"]}, **kw)
    with pytest.raises(DataError, match=r"ENCFFSYA001.bigWig: not a readable bigBed \(it is a bigWig\)$"):
        build_shard(tracks={"h3k27ac": (entry["h3k27ac"]["path"], "bigbed")}, **kw)
    with pytest.raises(DataError, match="track h3k27ac has kind 'bam'"):
        build_shard(tracks={"h3k27ac": {"path": entry["h3k27ac"]["path"], "kind": "bam"}}, **kw)


def test_nan_runs_in_a_bigwig_become_zero(demo_mirror, demo_fasta, demo_gene_tables, tmp_path):
    """Stored NaN values and stretches with no data both read as 0."""
    from prism.genes import read_gene_table

    genes = read_gene_table(demo_gene_tables["synthA"])
    t = int(genes.loc[genes["chrom"] == "chr21", "tss"].iat[3])
    path = tmp_path / "nan.bw"
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader([("chr21", demo_mirror["chromosomes"]["chr21"])])
    bw.addEntries(["chr21"] * 3, [t - 500, t - 400, t + 100], ends=[t - 400, t, t + 300], values=[2.0, np.nan, 3.0])
    bw.close()
    assert np.isnan(pyBigWig.open(str(path)).values("chr21", t - 400, t - 399)[0])  # a stored NaN run
    build_shard(genes_tsv=demo_gene_tables["synthA"], chrom="chr21", fasta=demo_fasta,
                tracks={"x": str(path)}, hic=None, window=W, out=tmp_path / "x.npz")
    s = read_shard(tmp_path / "x.npz")
    row = s["tracks"][list(s["tss"]).index(t), 0]
    want = np.zeros(W, dtype=np.float32)
    want[W // 2 - 500 : W // 2 - 400] = 2.0
    want[W // 2 + 100 : W // 2 + 300] = 3.0
    np.testing.assert_array_equal(row, want)
    assert np.isfinite(s["tracks"]).all()


def test_plan_keeps_bigbed_out_of_promoter_activity(footprint_plan):
    _, cfg, _ = footprint_plan
    cfg = copy.deepcopy(cfg)
    sig = cfg["cell_lines"]["synthC"]["signals"]
    sig["dnase"] = {"url": "file:///x/dnase.bb", "kind": "bigbed"}
    with pytest.raises(Exception, match="source bigwig needs a 'dnase' bigWig signal"):
        Plan(cfg, workdir="/w")
