"""The long-input store from real files: equal to shards of the same genes (float16 rounding aside),
equal to pyfaidx / pyBigWig past 200 kb, soft-masked FASTA, bad inputs as one line, atomic writes,
interval masks, forked loader workers."""

from __future__ import annotations

import gzip
import json
import math
import struct

import numpy as np
import pandas as pd
import pyBigWig
import pyfaidx
import pytest
import torch

from prism.demo import write_hic
from prism.genes import DataError, read_gene_table
from prism.preprocess import build_shard
from prism.shards import expand_hic, hic_offsets_for, read_shard
from prism.store import (
    GenomeStore,
    StoreSource,
    batch_interval_mask,
    build_genome_store,
    build_long_hic,
    build_track_store,
    genome_path,
    interval_mask,
    long_hic_path,
    merge_intervals,
    read_bed_intervals,
    read_codes_from,
    track_paths,
)

CHROMS = ("chr22", "chrX")  # chr22's first TSS is 350 bp from its start, chrX's last 600 bp from its end
W = 10_000
RES = 5000
LONG = 200_000
LUT = {"A": 0, "C": 1, "G": 2, "T": 3}


def _tracks(mirror, cell="synthA"):
    entry = mirror["cells"][cell]
    out = {"h3k27ac": (entry["h3k27ac"]["path"], "bigwig"), "dnase": (entry["dnase"]["path"], "bigwig")}
    if "footprints" in entry:
        out["footprints"] = (entry["footprints"]["path"], "bigbed")
    return out


def _hic(mirror, cell="synthA"):
    return {"path": mirror["cells"][cell]["hic"]["path"], "normalization": "NONE", "resolution": RES}


@pytest.fixture(scope="module")
def built(demo_mirror, demo_fasta, demo_gene_tables, tmp_path_factory):
    """Genome store (all demo chromosomes), synthA's track store and long Hi-C (L = 200 kb) for CHROMS,
    and synthA's shards (W = 10 kb, same tracks and Hi-C) for the same genes."""
    root = tmp_path_factory.mktemp("store")
    sizes = demo_mirror["chromosomes"]
    genome = build_genome_store(demo_fasta, list(sizes), root / "genome")
    tracks = _tracks(demo_mirror)
    shards = {}
    for chrom in CHROMS:
        build_track_store(tracks, chrom, sizes[chrom], root / "synthA" / chrom)
        build_long_hic(demo_gene_tables["synthA"], chrom, _hic(demo_mirror), LONG, long_hic_path(root, "synthA", chrom),
                       chrom_size=sizes[chrom])
        out = root / "shards" / f"{chrom}.npz"
        build_shard(genes_tsv=demo_gene_tables["synthA"], chrom=chrom, fasta=demo_fasta, tracks=tracks,
                    hic=_hic(demo_mirror), window=W, out=out)
        shards[chrom] = read_shard(out)
    source = StoreSource({c: genome_path(root, c) for c in sizes},
                         {c: track_paths(root, "synthA", c)[0] for c in CHROMS},
                         {c: long_hic_path(root, "synthA", c) for c in CHROMS})
    return {"root": root, "genome": genome, "shards": shards, "source": source}


def test_layout_and_sidecar(built, demo_mirror):
    root, sizes = built["root"], demo_mirror["chromosomes"]
    for chrom, size in sizes.items():
        codes = np.load(genome_path(root, chrom))
        assert codes.dtype == np.uint8 and codes.shape == (size,)
        assert built["genome"][chrom]["size"] == size
    npy, sidecar = track_paths(root, "synthA", "chr22")
    arr = np.load(npy, mmap_mode="r")
    assert arr.dtype == np.float16 and arr.shape == (3, sizes["chr22"])
    doc = json.loads(sidecar.read_text())
    assert doc["dtype"] == "float16" and doc["shape"] == [3, sizes["chr22"]] and doc["chrom"] == "chr22"
    assert [t["name"] for t in doc["tracks"]] == ["h3k27ac", "dnase", "footprints"]
    assert [t["kind"] for t in doc["tracks"]] == ["bigwig", "bigwig", "bigbed"]
    assert doc["tracks"][0]["path"] == demo_mirror["cells"]["synthA"]["h3k27ac"]["path"]
    assert built["source"].track_names == ["h3k27ac", "dnase", "footprints"]
    assert list(built["source"].hic_offsets) == list(hic_offsets_for(LONG, RES)) and built["source"].hic_window == LONG
    assert not list(root.rglob("*.tmp"))


@pytest.mark.parametrize("length", [W, 2000])
def test_equal_to_shards(built, length):
    """Every gene of CHROMS, at a length both serve: sequence and Hi-C identical, tracks identical up
    to float16 rounding, per-base Hi-C (expand_hic) identical."""
    src = built["source"]
    for chrom, sh in built["shards"].items():
        n = len(sh["tss"])
        got = src.fetch([chrom] * n, sh["tss"], length)
        c0 = (W - length) // 2
        np.testing.assert_array_equal(got.seq, sh["seq"][:, c0 : c0 + length])
        want = sh["tracks"][:, :, c0 : c0 + length]
        assert got.tracks.dtype == np.float32 and got.tracks.shape == want.shape
        assert all((want[:, j] != 0).any() for j in range(3)) and (sh["hic"] > 0).any()  # nothing trivially 0
        np.testing.assert_array_equal(got.tracks, want.astype(np.float16).astype(np.float32))
        assert np.abs(got.tracks - want).max() <= 2.0**-11 * np.abs(want).max()
        # the long bins around the TSS are the shard's bins
        mid = list(src.hic_offsets).index(sh["hic_offsets"][0])
        np.testing.assert_array_equal(got.hic[:, mid : mid + len(sh["hic_offsets"])], sh["hic"])
        per_base = expand_hic(got.hic, src.hic_offsets, src.hic_resolution, sh["tss"], src.hic_window, length)
        np.testing.assert_array_equal(
            per_base, expand_hic(sh["hic"], sh["hic_offsets"], sh["hic_resolution"], sh["tss"], W, length))
    # the test set covers padding at both chromosome ends
    assert built["shards"]["chr22"]["tss"][0] < W // 2 and (built["shards"]["chr22"]["seq"][0, :10] == 4).all()


def test_200kb_windows_equal_the_files(built, demo_mirror, demo_fasta):
    """At L = 200,000 (longer than chr22's halves): pyfaidx sequence and pyBigWig values, N / 0 padding."""
    src = built["source"]
    size = demo_mirror["chromosomes"]["chr22"]
    tss = built["shards"]["chr22"]["tss"][[0, 40, -1]]
    got = src.fetch("chr22", tss, LONG)
    assert got.seq.shape == (3, LONG) and got.tracks.shape == (3, 3, LONG) and got.hic.shape == (3, 43)
    fa = pyfaidx.Fasta(str(demo_fasta))
    bw = pyBigWig.open(demo_mirror["cells"]["synthA"]["h3k27ac"]["path"])
    for i, t in enumerate(tss):
        a, b = int(t) - LONG // 2, int(t) + LONG // 2
        lo, hi = max(a, 0), min(b, size)
        want = np.full(LONG, 4)
        want[lo - a : hi - a] = [LUT.get(ch, 4) for ch in str(fa["chr22"][lo:hi])]
        np.testing.assert_array_equal(got.seq[i], want)
        vals = np.zeros(LONG, dtype=np.float32)
        vals[lo - a : hi - a] = np.nan_to_num(bw.values("chr22", lo, hi, numpy=True))
        np.testing.assert_array_equal(got.tracks[i, 0], vals.astype(np.float16).astype(np.float32))
        assert (got.tracks[i, :, : lo - a] == 0).all() and (got.tracks[i, :, hi - a :] == 0).all()
    # per-base Hi-C over the whole 200 kb: bin of each base against the TSS's bin
    per_base = expand_hic(got.hic, src.hic_offsets, RES, tss, src.hic_window, LONG)
    for i, t in enumerate(tss):
        for j in (0, 1234, LONG // 2, LONG - 1):
            o = (int(t) - LONG // 2 + j) // RES - int(t) // RES
            assert per_base[i, j] == got.hic[i, list(src.hic_offsets).index(o)]


def test_track_subset_and_ensembl_names(built, demo_mirror, demo_gene_tables, tmp_path):
    """Served tracks in the asked order; synthC's DNase bigWig and .hic name chromosomes "X"."""
    root, sizes = built["root"], demo_mirror["chromosomes"]
    src = StoreSource({c: genome_path(root, c) for c in sizes}, {"chr22": track_paths(root, "synthA", "chr22")[0]},
                      None, track_names=["footprints", "h3k27ac"])
    sh = built["shards"]["chr22"]
    got = src.fetch("chr22", sh["tss"][:5], 2000)
    np.testing.assert_array_equal(got.tracks, sh["tracks"][:5, [2, 0], 4000:6000].astype(np.float16))
    assert set(np.unique(got.tracks[:, 0])) <= {0.0, 1.0} and got.hic.shape == (5, 0)
    half = src.fetch("chr22", sh["tss"][:5], 2000, dtype=np.float16).tracks  # as stored, for a device-side cast
    assert half.dtype == np.float16 and np.array_equal(half, got.tracks)
    with pytest.raises(DataError, match=r"chr22.tracks.json: no track 'h3k4me3'"):
        StoreSource({c: genome_path(root, c) for c in sizes}, {"chr22": track_paths(root, "synthA", "chr22")[0]},
                    None, track_names=["h3k4me3"])

    tracks = _tracks(demo_mirror, "synthC")
    build_track_store(tracks, "chrX", sizes["chrX"], tmp_path / "chrX")
    build_long_hic(demo_gene_tables["synthC"], "chrX", _hic(demo_mirror, "synthC"), 20_000, tmp_path / "hic.npz",
                   chrom_size=sizes["chrX"])
    c = StoreSource({"chrX": genome_path(root, "chrX")}, {"chrX": tmp_path / "chrX.tracks.npy"},
                    {"chrX": tmp_path / "hic.npz"})
    genes = read_gene_table(demo_gene_tables["synthC"])
    t = int(genes.loc[genes["chrom"] == "chrX", "tss"].iloc[3])
    got = c.fetch(["chrX"], [t], 20_000)
    bw = pyBigWig.open(tracks["dnase"][0])
    np.testing.assert_array_equal(got.tracks[0, 1], np.nan_to_num(bw.values("X", t - 10_000, t + 10_000, numpy=True))
                                  .astype(np.float16))
    assert (got.hic != 0).any()
    with pytest.raises(DataError, match=r"hic.npz: no Hi-C row for TSS chrX:\d+"):
        c.fetch(["chrX"], [t + 1], 2000)


def test_soft_masked_and_iupac_fasta(tmp_path, caplog):
    seq = "NNNNacgtACGTnRYKMSWacgtNN" * 40 + "ggcc"
    (tmp_path / "g.fa").write_text(">chr7\n" + "\n".join(seq[i : i + 60] for i in range(0, len(seq), 60)) + "\n")
    pyfaidx.Fasta(str(tmp_path / "g.fa")).close()  # writes the .fai as the workflow's genome rule does
    with caplog.at_level("INFO", logger="prism.store"):
        info = build_genome_store(tmp_path / "g.fa", ["7"], tmp_path / "genome")
    codes = np.load(tmp_path / "genome" / "chr7.npy")
    want = [{"A": 0, "C": 1, "G": 2, "T": 3}.get(ch.upper(), 4) for ch in seq]
    assert codes.tolist() == want
    n_frac = sum(w == 4 for w in want) / len(seq)
    assert info["chr7"]["n_fraction"] == pytest.approx(n_frac)
    assert f"N fraction {n_frac:.4f}" in caplog.text
    read_codes = read_codes_from(tmp_path / "genome", ["chr7"])
    assert read_codes("chr7", 4, 12).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert read_codes("7", -3, 2).tolist() == [4, 4, 4, 4, 4]
    assert read_codes("chr7", len(seq) - 2, len(seq) + 2).tolist() == [1, 1, 4, 4]
    with pytest.raises(DataError, match="chromosome chr8 is not stored"):
        read_codes("chr8", 0, 3)


def test_read_codes_equals_pyfaidx(built, demo_fasta):
    read_codes = read_codes_from(built["root"] / "genome", ["chr1", "chr22"])
    fa = pyfaidx.Fasta(str(demo_fasta))
    for a, b in ((0, 100), (123_456, 125_000), (599_000, 600_123)):
        assert read_codes("chr1", a, b).tolist() == [LUT.get(ch, 4) for ch in str(fa["chr1"][a:b])]
    assert (read_codes("chr1", 0, 0)).shape == (0,)


def _bigwig(path, chroms: dict, entries: dict):
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader(list(chroms.items()))
    for chrom, (starts, ends, values) in entries.items():
        bw.addEntries([chrom] * len(starts), list(starts), ends=list(ends), values=[float(v) for v in values])
    bw.close()
    return path


def _assert_no_outputs(folder):
    assert not [p.name for p in folder.iterdir() if p.name.startswith(("chr22", ".chr22"))]


def test_truncated_and_corrupt_bigwig(demo_mirror, tmp_path):
    sizes = demo_mirror["chromosomes"]
    src = open(demo_mirror["cells"]["synthA"]["h3k27ac"]["path"], "rb").read()
    (tmp_path / "cut.bw").write_bytes(src[: len(src) * 6 // 10])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError, match=r"cut.bw: not a readable bigWig") as err:
        build_track_store({"h3k27ac": (tmp_path / "cut.bw", "bigwig")}, "chr22", sizes["chr22"], out / "chr22")
    assert "\n" not in str(err.value)
    _assert_no_outputs(out)
    # flip bytes inside the first data block (chr1's: the demo writes chr1 first)
    data_offset = struct.unpack_from("<Q", src, 16)[0]
    bad = bytearray(src)
    for i in range(data_offset + 40, data_offset + 240):
        bad[i] ^= 0xFF
    (tmp_path / "flip.bw").write_bytes(bytes(bad))
    with pytest.raises(DataError, match=r"flip.bw: reading chr1:0-\d+ failed .*corrupt") as err:
        build_track_store({"h3k27ac": (tmp_path / "flip.bw", "bigwig")}, "chr1", sizes["chr1"], out / "chr22")
    assert "\n" not in str(err.value)
    _assert_no_outputs(out)


def test_missing_chromosome_in_bigwig_and_hic(demo_mirror, demo_gene_tables, tmp_path):
    sizes = demo_mirror["chromosomes"]
    path = _bigwig(tmp_path / "chr1_only.bw", {"chr1": sizes["chr1"]}, {"chr1": ([0], [10], [1.0])})
    good = demo_mirror["cells"]["synthA"]["h3k27ac"]["path"]
    out = tmp_path / "out"
    out.mkdir()
    # the first track is fine and already written into the temp file when the second fails
    with pytest.raises(DataError, match=r"chr1_only.bw: chromosome chr22 is missing") as err:
        build_track_store({"h3k27ac": (good, "bigwig"), "dnase": (path, "bigwig")}, "chr22", sizes["chr22"],
                          out / "chr22")
    assert "\n" not in str(err.value)
    _assert_no_outputs(out)

    hic = tmp_path / "chr1_only.hic"
    write_hic(hic, {"chr1": sizes["chr1"]}, RES, pd.DataFrame({"chrom1": ["chr1"], "start1": [0], "end1": [RES],
              "chrom2": ["chr1"], "start2": [RES], "end2": [2 * RES], "count": [3]}))
    with pytest.raises(DataError, match=r"chr1_only.hic: chromosome chr22 is missing") as err:
        build_long_hic(demo_gene_tables["synthA"], "chr22", {"path": hic, "normalization": "NONE", "resolution": RES},
                       LONG, out / "chr22.hic.npz", chrom_size=sizes["chr22"])
    assert "\n" not in str(err.value)
    _assert_no_outputs(out)


def test_float16_overflow_is_an_error(tmp_path):
    path = _bigwig(tmp_path / "spike.bw", {"chr22": 50_000}, {"chr22": ([0, 100, 101], [100, 101, 200], [2.5, 7e4, 1.0])})
    with pytest.raises(DataError, match=r"spike.bw: chr22:100 value 70000 overflows float16"):
        build_track_store({"x": (path, "bigwig")}, "chr22", 50_000, tmp_path / "chr22")
    assert not (tmp_path / "chr22.tracks.npy").exists()
    ok = _bigwig(tmp_path / "ok.bw", {"chr22": 50_000}, {"chr22": ([0, 100], [100, 200], [65504.0, -3.0])})
    build_track_store({"x": (ok, "bigwig")}, "chr22", 50_000, tmp_path / "chr22")
    arr = np.load(tmp_path / "chr22.tracks.npy")
    assert arr[0, 99] == 65504 and arr[0, 150] == -3 and arr[0, 300] == 0
    assert json.loads((tmp_path / "chr22.tracks.json").read_text())["tracks"][0]["max_abs"] == 65504


def test_failed_rebuild_keeps_the_old_file_and_truncated_store_is_an_error(built, demo_mirror, tmp_path):
    sizes = demo_mirror["chromosomes"]
    good = {"h3k27ac": (demo_mirror["cells"]["synthA"]["h3k27ac"]["path"], "bigwig")}
    build_track_store(good, "chr22", sizes["chr22"], tmp_path / "chr22")
    before = np.load(tmp_path / "chr22.tracks.npy")
    (tmp_path / ".chr22.tracks.npy.999.tmp").write_bytes(b"left by a killed job")
    missing = _bigwig(tmp_path / "chr1_only.bw", {"chr1": sizes["chr1"]}, {"chr1": ([0], [10], [1.0])})
    with pytest.raises(DataError):
        build_track_store({**good, "dnase": (missing, "bigwig")}, "chr22", sizes["chr22"], tmp_path / "chr22")
    np.testing.assert_array_equal(np.load(tmp_path / "chr22.tracks.npy"), before)
    assert json.loads((tmp_path / "chr22.tracks.json").read_text())["shape"] == [1, sizes["chr22"]]

    raw = genome_path(built["root"], "chr22").read_bytes()
    (tmp_path / "chr22.npy").write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(DataError, match=r"chr22.npy: \d+ bytes, its header says \d+ \(truncated store file\?\)"):
        GenomeStore({"chr22": tmp_path / "chr22.npy"})
    with pytest.raises(DataError, match=r"genome store's chr22"):
        StoreSource({"chr22": genome_path(built["root"], "chr22")}, {"chr22": track_paths(built["root"], "synthA", "chrX")[0]})


def test_forked_loader_workers(built):
    """Two DataLoader workers (fork) read through their own descriptors and get the same batches."""
    src = built["source"]
    sh = built["shards"]["chrX"]

    def collate(idx):
        got = src.fetch("chrX", sh["tss"][np.asarray(idx)], 4000)
        return torch.from_numpy(got.seq), torch.from_numpy(got.tracks)

    src.fetch("chrX", sh["tss"][:1], 4000)  # the parent has opened its descriptors before the fork
    loader = torch.utils.data.DataLoader(range(24), batch_size=6, num_workers=2, collate_fn=collate,
                                         multiprocessing_context="fork")
    for k, (seq, tracks) in enumerate(loader):
        want = src.fetch("chrX", sh["tss"][6 * k : 6 * k + 6], 4000)
        np.testing.assert_array_equal(seq.numpy(), want.seq)
        np.testing.assert_array_equal(tracks.numpy(), want.tracks)


# ---------------------------------------------------------------- interval masks


def _brute_mask(iv, starts, length):
    out = np.zeros((len(starts), length), dtype=bool)
    for i, s in enumerate(starts):
        for a, b in iv:
            lo, hi = max(a - s, 0), min(b - s, length)
            if lo < hi:
                out[i, lo:hi] = True
    return out


def test_read_bed_intervals_blacklist_and_narrowpeak(tmp_path):
    lines = ["track name=blacklist", "# ENCODE hg38 blacklist v2", "chr1\t100\t200\tHigh Signal Region",
             "chr1\t150\t260\tLow Mappability", "chr1\t260\t300\tx", "chr1\t10\t20\tx", "chrX\t5\t9\tx", ""]
    with gzip.open(tmp_path / "blacklist.bed.gz", "wt") as fh:
        fh.write("\n".join(lines))
    iv = read_bed_intervals(tmp_path / "blacklist.bed.gz")
    assert sorted(iv) == ["chr1", "chrX"] and iv["chr1"].dtype == np.int64
    assert iv["chr1"].tolist() == [[10, 20], [100, 300]] and iv["chrX"].tolist() == [[5, 9]]
    peak = "1\t1000\t1500\tpeak1\t0\t.\t5.2\t10.1\t8.3\t250\n2\t30\t60\tpeak2\t0\t.\t2\t3\t1\t10\n"
    (tmp_path / "p.narrowPeak").write_text(peak)
    assert read_bed_intervals(tmp_path / "p.narrowPeak")["chr2"].tolist() == [[30, 60]]
    (tmp_path / "bad.bed").write_text("chr1\t10\t20\nchr1\tten\t30\n")
    with pytest.raises(DataError, match=r"bad.bed: line 2 is not BED"):
        read_bed_intervals(tmp_path / "bad.bed")


def test_interval_mask_equals_a_loop():
    rng = np.random.default_rng(0)
    starts = rng.integers(0, 1_000_000, 300)
    iv = np.stack([starts, starts + rng.integers(1, 3000, 300)], 1)  # overlapping, unsorted
    windows = np.concatenate([rng.integers(-5000, 1_005_000, 40), [-20_000, 2_000_000]])
    for length in (1, 2000, 20_000):
        got = interval_mask(iv, windows, length)
        assert got.shape == (len(windows), length) and got.dtype == bool
        np.testing.assert_array_equal(got, _brute_mask(merge_intervals(iv), windows, length))
        np.testing.assert_array_equal(got, _brute_mask(iv, windows, length))
    assert interval_mask(np.zeros((0, 2), np.int64), [5], 10).sum() == 0
    adjacent = np.array([[10, 20], [20, 30]])
    assert interval_mask(adjacent, [0], 40)[0].tolist() == [False] * 10 + [True] * 20 + [False] * 10
    by = {"chr1": iv, "chrX": np.array([[0, 5]])}
    got = batch_interval_mask(by, ["chr1", "chrX", "chr2", "1"], [windows[0], -2, 0, windows[1]], 2000)
    np.testing.assert_array_equal(got[0], interval_mask(iv, [windows[0]], 2000)[0])
    assert got[1].sum() == 5 and got[1, :7].tolist() == [False, False] + [True] * 5
    assert got[2].sum() == 0
    np.testing.assert_array_equal(got[3], interval_mask(iv, [windows[1]], 2000)[0])


def test_hic_edges_match_a_hand_definition(built, demo_mirror):
    """Long bins off the chromosome are 0 (the shards' rule), inside they are nonzero where pixels are."""
    src = built["source"]
    sh = built["shards"]["chr22"]
    got = src.fetch("chr22", sh["tss"][:1], 2000).hic[0]  # TSS 350: bins -21..-1 are off the chromosome
    offsets = list(src.hic_offsets)
    assert (got[: offsets.index(0)] == 0).all()
    nbins = math.ceil(demo_mirror["chromosomes"]["chr22"] / RES)
    assert offsets[-1] < nbins and (got[offsets.index(0) :] > 0).sum() > 5


def test_cell_data_serves_the_same_batches_from_the_store_as_from_shards(built, demo_mirror, demo_gene_tables):
    """prism.data.CellData on the store equals CellData on shards (tracks up to float16), blacklist masks beside."""
    import torch

    from prism.data import CellData

    root = built["root"]
    shard_paths = [str(root / "shards" / f"{c}.npz") for c in CHROMS]
    signals = ["dnase", "hic", "h3k27ac"]
    a = CellData("synthA", demo_gene_tables["synthA"], shard_paths, signals, 2000)
    b = CellData.from_store("synthA", demo_gene_tables["synthA"], [str(genome_path(root, c)) for c in CHROMS],
                            [str(p) for c in CHROMS for p in (*track_paths(root, "synthA", c),
                                                                long_hic_path(root, "synthA", c))],
                            signals, 2000)
    assert list(a.gene_id) == list(b.gene_id)
    rows = np.arange(len(a))
    x, y = a.batch(rows), b.batch(rows)
    assert torch.equal(x.seq, y.seq) and torch.equal(x.target, y.target) and torch.equal(x.features, y.features)
    torch.testing.assert_close(y.signals[:, [0, 2]], x.signals[:, [0, 2]].half().float())  # tracks: float16
    assert torch.equal(y.signals[:, 1], x.signals[:, 1])  # Hi-C: the same bins
    b.intervals["blacklist"] = {"chr22": np.array([[0, 100_000]])}
    mask = b.batch(rows[:3]).extra["blacklist"]
    assert mask.dtype == torch.bool and mask.shape == (3, 2000) and mask[0].any()
