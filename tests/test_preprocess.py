"""Shards from real files: sequence vs pyfaidx, tracks vs pyBigWig, Hi-C vs a hand transform of
hicstraw records; edge padding; bad inputs; the shard helpers."""

from __future__ import annotations

import math

import numpy as np
import pyBigWig
import pyfaidx
import pytest

from prism.genes import DataError, read_gene_table, write_gene_table
from prism.preprocess import build_shard, chrom_sizes
from prism.shards import crop, expand_hic, one_hot, read_shard, read_shards

W = 2000
RES = 5000


def _inputs(mirror, cell):
    entry = mirror["cells"][cell]
    tracks = {"h3k27ac": entry["h3k27ac"]["path"], "dnase": entry["dnase"]["path"]}
    hic = {"path": entry["hic"]["path"], "normalization": "NONE", "resolution": RES}
    return tracks, hic


@pytest.fixture(scope="module")
def shard_chr22(demo_mirror, demo_fasta, demo_gene_tables, tmp_path_factory):
    tracks, hic = _inputs(demo_mirror, "synthA")
    out = tmp_path_factory.mktemp("shards") / "synthA.chr22.npz"
    build_shard(genes_tsv=demo_gene_tables["synthA"], chrom="chr22", fasta=demo_fasta, tracks=tracks, hic=hic,
                window=W, out=out)
    return read_shard(out)


def _hand_hic(hic_path, chrom, tss, offsets, size):
    """The DATA.md transform written out longhand from hicstraw records."""
    import hicstraw

    mzd = hicstraw.HiCFile(str(hic_path)).getMatrixZoomData(chrom, chrom, "observed", "NONE", "BP", RES)
    nbins = math.ceil(size / RES)

    def contact(a, b):
        recs = mzd.getRecords(a * RES, a * RES, b * RES, b * RES)
        return sum(r.counts for r in recs if {r.binX // RES, r.binY // RES} == {a, b})

    def pl(d):
        gamma = 0.87
        return math.exp(-4.80 + 11.63 * gamma - gamma * math.log(max(d, 5000) + 1))

    t = tss // RES
    qc_bins = sorted({(tss - 500) // RES, (tss + 499) // RES} & set(range(nbins)))
    qc = sum(contact(t, b) for b in qc_bins)
    out = []
    for o in offsets:
        b = t + o
        if qc < 0.01 or not 0 <= b < nbins:
            out.append(0.0)
            continue
        d = abs(o) * RES
        out.append(math.log10(contact(t, b) + min(pl(d), pl(1e6)) + 1))
    return np.array(out)


def test_shard_layout(shard_chr22, demo_gene_tables):
    genes = read_gene_table(demo_gene_tables["synthA"])
    genes = genes[genes["chrom"] == "chr22"]
    s = shard_chr22
    n = len(genes)
    assert list(s["gene_id"]) == list(genes["gene_id"]) and (s["tss"] == genes["tss"].to_numpy()).all()
    assert s["window"] == W and s["seq"].shape == (n, W) and s["seq"].dtype == np.uint8
    assert s["tracks"].shape == (n, 2, W) and s["tracks"].dtype == np.float32
    assert list(s["track_names"]) == ["h3k27ac", "dnase"]
    assert list(s["hic_offsets"]) == [-1, 0, 1] and s["hic_resolution"] == RES
    assert s["hic"].shape == (n, 3) and s["hic"].dtype == np.float32


def test_sequence_and_tracks_match_the_files(shard_chr22, demo_mirror, demo_fasta):
    fa = pyfaidx.Fasta(str(demo_fasta))
    bws = [pyBigWig.open(demo_mirror["cells"]["synthA"][m]["path"]) for m in ("h3k27ac", "dnase")]
    lut = {"A": 0, "C": 1, "G": 2, "T": 3}
    for i in (3, 20, len(shard_chr22["tss"]) - 1):
        t = int(shard_chr22["tss"][i])
        want = [lut.get(c, 4) for c in str(fa["chr22"][t - W // 2 : t + W // 2])]
        assert shard_chr22["seq"][i].tolist() == want
        for j, bw in enumerate(bws):
            vals = np.nan_to_num(bw.values("chr22", t - W // 2, t + W // 2, numpy=True))
            np.testing.assert_array_equal(shard_chr22["tracks"][i, j], vals)
    assert np.isnan(bws[0].values("chr22", 0, 320233, numpy=True)).any()  # the demo has gaps (NaN -> 0)


def test_window_past_the_chromosome_start_is_padded(shard_chr22, demo_fasta, demo_mirror):
    # the demo puts the first chr22 TSS at 350: 650 bases of the window lie before the start
    assert shard_chr22["tss"][0] == 350
    pad = W // 2 - 350
    assert (shard_chr22["seq"][0, :pad] == 4).all() and (shard_chr22["tracks"][0, :, :pad] == 0).all()
    fa = pyfaidx.Fasta(str(demo_fasta))
    lut = {"A": 0, "C": 1, "G": 2, "T": 3}
    assert shard_chr22["seq"][0, pad:].tolist() == [lut.get(c, 4) for c in str(fa["chr22"][0 : 350 + W // 2])]
    assert shard_chr22["hic"][0, 0] == 0.0  # bin -1 is off the chromosome


def test_window_past_the_chromosome_end_is_padded(demo_mirror, demo_fasta, demo_gene_tables, tmp_path):
    tracks, hic = _inputs(demo_mirror, "synthA")
    out = tmp_path / "chrX.npz"
    build_shard(genes_tsv=demo_gene_tables["synthA"], chrom="X", fasta=demo_fasta, tracks=tracks, hic=hic,
                window=W, out=out)
    s = read_shard(out)
    size = demo_mirror["chromosomes"]["chrX"]
    assert s["tss"][-1] == size - 600
    inside = W // 2 + 600
    assert (s["seq"][-1, inside:] == 4).all() and (s["tracks"][-1, :, inside:] == 0).all()
    assert (s["seq"][-1, :inside] < 4).any()


def test_hic_equals_a_hand_computation(shard_chr22, demo_mirror):
    path = demo_mirror["cells"]["synthA"]["hic"]["path"]
    size = demo_mirror["chromosomes"]["chr22"]
    rows = list(range(0, len(shard_chr22["tss"]), 9))
    qc_failed = np.flatnonzero((shard_chr22["hic"] == 0).all(axis=1))
    assert len(qc_failed) > 0  # the demo drops all contacts of two gene bins per chromosome
    for i in rows + [int(qc_failed[0])]:
        want = _hand_hic(path, "chr22", int(shard_chr22["tss"][i]), shard_chr22["hic_offsets"], size)
        np.testing.assert_allclose(shard_chr22["hic"][i], want, rtol=1e-6)


def test_ensembl_named_bigwig_and_hic_wider_window(demo_mirror, demo_fasta, demo_gene_tables, tmp_path):
    """synthC's DNase bigWig and .hic name chromosomes "1", "X"; a 40 kb window spans 9+ bins."""
    tracks, hic = _inputs(demo_mirror, "synthC")
    out = tmp_path / "c.npz"
    build_shard(genes_tsv=demo_gene_tables["synthC"], chrom="chr21", fasta=demo_fasta, tracks=tracks, hic=hic,
                window=40_000, out=out)
    s = read_shard(out)
    assert list(s["hic_offsets"]) == list(range(-5, 6))
    size = demo_mirror["chromosomes"]["chr21"]
    i = 10
    want = _hand_hic(hic["path"], "21", int(s["tss"][i]), s["hic_offsets"], size)
    np.testing.assert_allclose(s["hic"][i], want, rtol=1e-6)
    t = int(s["tss"][i])
    bw = pyBigWig.open(tracks["dnase"])
    np.testing.assert_array_equal(s["tracks"][i, 1], np.nan_to_num(bw.values("21", t - 20_000, t + 20_000, numpy=True)))


def test_missing_chromosome_in_bigwig_is_an_error(demo_mirror, demo_fasta, demo_gene_tables, tmp_path):
    path = tmp_path / "chr1_only.bw"
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader([("chr1", demo_mirror["chromosomes"]["chr1"])])
    bw.addEntries(["chr1"], [0], ends=[10], values=[1.0])
    bw.close()
    with pytest.raises(DataError, match=r"chr1_only.bw: chromosome chr22 is missing"):
        build_shard(genes_tsv=demo_gene_tables["synthA"], chrom="chr22", fasta=demo_fasta,
                    tracks={"h3k27ac": str(path)}, hic=None, window=W, out=tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


def test_missing_normalisation_is_an_error(demo_mirror, demo_fasta, demo_gene_tables, tmp_path):
    tracks, hic = _inputs(demo_mirror, "synthA")
    with pytest.raises(DataError, match=r"4DNFISYNTHA1.hic: no VC normalization vectors for chr22 at 5000 bp") as err:
        build_shard(genes_tsv=demo_gene_tables["synthA"], chrom="chr22", fasta=demo_fasta, tracks=tracks,
                    hic={**hic, "normalization": "VC"}, window=W, out=tmp_path / "x.npz")
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="no 10000 bp resolution"):
        build_shard(genes_tsv=demo_gene_tables["synthA"], chrom="chr22", fasta=demo_fasta, tracks=tracks,
                    hic={**hic, "resolution": 10000}, window=W, out=tmp_path / "x.npz")


def test_empty_shard_and_no_hic(demo_mirror, demo_fasta, demo_gene_tables, tmp_path):
    genes = read_gene_table(demo_gene_tables["synthA"])
    write_gene_table(genes[genes["chrom"] != "chr21"], tmp_path / "g.tsv")
    tracks, hic = _inputs(demo_mirror, "synthA")
    build_shard(genes_tsv=tmp_path / "g.tsv", chrom="chr21", fasta=demo_fasta, tracks=tracks, hic=hic,
                window=W, out=tmp_path / "empty.npz")
    build_shard(genes_tsv=tmp_path / "g.tsv", chrom="chr22", fasta=demo_fasta, tracks=tracks, hic=None,
                window=W, out=tmp_path / "nohic.npz")
    empty = read_shard(tmp_path / "empty.npz")
    assert empty["seq"].shape == (0, W) and empty["tracks"].shape == (0, 2, W) and empty["hic"].shape == (0, 3)
    nohic = read_shard(tmp_path / "nohic.npz")
    assert nohic["hic"].shape == (len(nohic["tss"]), 0) and nohic["hic_resolution"] == 0
    assert expand_hic(nohic["hic"], nohic["hic_offsets"], 0, nohic["tss"], W, 100).shape == (len(nohic["tss"]), 100)


def test_read_shards_expand_one_hot_crop(shard_chr22, demo_mirror, demo_fasta, demo_gene_tables, tmp_path):
    tracks, hic = _inputs(demo_mirror, "synthA")
    paths = []
    for chrom in ("chr21", "chr22"):
        paths.append(tmp_path / f"{chrom}.npz")
        build_shard(genes_tsv=demo_gene_tables["synthA"], chrom=chrom, fasta=demo_fasta, tracks=tracks, hic=hic,
                    window=W, out=paths[-1])
    both = read_shards(paths)
    n21 = len(read_shard(paths[0])["tss"])
    assert len(both["gene_id"]) == n21 + len(shard_chr22["gene_id"])
    np.testing.assert_array_equal(both["hic"][n21:], shard_chr22["hic"])

    s = shard_chr22
    length = 1000
    per_base = expand_hic(s["hic"], s["hic_offsets"], s["hic_resolution"], s["tss"], W, length)
    assert per_base.shape == (len(s["tss"]), length) and per_base.dtype == np.float32
    for i in (0, 5):
        t = int(s["tss"][i])
        for j in (0, 333, length - 1):
            p = t - length // 2 + j
            o = p // RES - t // RES
            assert per_base[i, j] == s["hic"][i, list(s["hic_offsets"]).index(o)]

    oh = one_hot(crop(s["seq"], W, length))
    assert oh.shape == (len(s["tss"]), length, 4) and oh.dtype == np.float32
    codes = crop(s["seq"], W, length)
    assert (oh.sum(-1) == (codes < 4)).all() and (oh.argmax(-1)[codes < 4] == codes[codes < 4]).all()
    assert crop(s["tracks"], W, length).shape == (len(s["tss"]), 2, length)
    np.testing.assert_array_equal(crop(s["tracks"], W, length)[:, :, 0], s["tracks"][:, :, (W - length) // 2])


def test_chrom_sizes(demo_fasta, demo_mirror):
    assert chrom_sizes(demo_fasta) == demo_mirror["chromosomes"]
