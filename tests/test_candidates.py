"""EPInformer's candidates from the demo's ABC zips and from DNase peaks, and the batches built from them."""

from __future__ import annotations

import gzip
import io
import zipfile

import hicstraw
import numpy as np
import pandas as pd
import pyBigWig
import pyfaidx
import pytest
import torch

from prism.candidates import (
    ElementBatcher,
    FastaCodes,
    build_candidates_from_abc,
    build_candidates_from_peaks,
    candidate_counts,
    read_candidates,
    write_candidates,
)
from prism.data import Batch
from prism.genes import DataError, read_gene_table
from prism.model.epinformer import EPInformer
from prism.preprocess import transform_hic
from prism.shards import one_hot


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small convolutions: one thread ran 20x faster than two on a shared 2-core machine (measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def abc_table(mirror, cell) -> pd.DataFrame:
    """The demo ABC zip's EnhancerPredictionsAllPutative table, read straight from the zip."""
    entry = mirror["cells"][cell]
    with zipfile.ZipFile(entry["abc_zip"]) as zf:
        raw = zf.read(entry["abc_members"]["predictions"])
    return pd.read_csv(io.BytesIO(gzip.decompress(raw)), sep="\t")


@pytest.fixture(scope="module")
def abc_candidates(demo_mirror, demo_gene_tables, tmp_path_factory):
    """{cell: (summary, table)} for synthA (TargetGene = Ensembl IDs) and synthB (TargetGene = symbols)."""
    out = {}
    for cell in ("synthA", "synthB"):
        path = tmp_path_factory.mktemp("candidates") / f"{cell}.tsv"
        res = build_candidates_from_abc(demo_mirror["cells"][cell]["abc_zip"], demo_gene_tables[cell], path)
        out[cell] = (res, read_candidates(path))
    return out


@pytest.mark.parametrize("cell", ["synthA", "synthB"])
def test_abc_candidates_are_the_nearest_60_within_100kb(cell, abc_candidates, demo_mirror, demo_gene_tables):
    res, table = abc_candidates[cell]
    genes = read_gene_table(demo_gene_tables[cell])
    pred = abc_table(demo_mirror, cell)
    key = "gene_id" if cell == "synthA" else "gene_name"
    assert pred["TargetGene"].isin(genes[key]).all()
    to_id = dict(zip(genes[key], genes["gene_id"]))
    pred["gene_id"] = pred["TargetGene"].map(to_id)
    counts = candidate_counts(table)
    assert set(counts.index) == set(genes["gene_id"]) and res["n_genes"] == len(genes)
    assert res["candidates"] == {"median": float(counts.median()), "min": int(counts.min()), "max": int(counts.max())}
    assert counts.max() == 60 and counts.min() == 0
    # genes ABC did not call expressed are absent from the table: promoter only, as EPInformer
    assert (counts[~counts.index.isin(pred["gene_id"])] == 0).all()
    for gid in genes["gene_id"].iloc[::37]:
        rows = table[table["gene_id"] == gid]
        g = genes.set_index("gene_id").loc[gid]
        assert rows["rank"].tolist() == list(range(len(rows)))
        prom = rows.iloc[0]
        assert (prom["name"], prom.start, prom.end, prom.distance, prom.activity, prom.hic) == (
            "promoter", g.tss - 1000, g.tss + 1000, 0, 0, 0)
        want = pred[(pred["gene_id"] == gid) & (pred["distance"] > 1000) & (pred["distance"] < 100_000)]
        want = want.sort_values(["distance", "start"], kind="stable").head(60)
        got = rows.iloc[1:]
        assert got["name"].tolist() == want["name"].tolist()
        np.testing.assert_allclose(got["distance"], want["distance"], rtol=1e-6)
        np.testing.assert_allclose(got["activity"], want["activity_base"], rtol=1e-5)
        np.testing.assert_allclose(got["hic"], np.nan_to_num(np.log10(1 + want["hic_contact"])), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got["abc_score"], want["ABC.Score"], rtol=1e-5)
        assert (got["chrom"] == g.chrom).all() and (got["source"] == "abc").all()


def test_abc_sources_and_bad_input(demo_mirror, demo_gene_tables, abc_candidates, tmp_path):
    entry = demo_mirror["cells"]["synthA"]
    with zipfile.ZipFile(entry["abc_zip"]) as zf:
        raw = zf.read(entry["abc_members"]["predictions"])
    # the table itself (gzipped, ENCODE-style "#chr" header) gives the same candidates as the zip
    text = gzip.decompress(raw).decode().replace("chr\tstart", "#chr\tstart", 1)
    plain = tmp_path / "EnhancerPredictionsAllPutative.txt.gz"
    plain.write_bytes(gzip.compress(text.encode()))
    build_candidates_from_abc(plain, demo_gene_tables["synthA"], tmp_path / "plain.tsv",
                              member=None)
    pd.testing.assert_frame_equal(read_candidates(tmp_path / "plain.tsv"), abc_candidates["synthA"][1])
    with pytest.raises(DataError, match=r"zip has no member x/EnhancerPredictionsAllPutative.txt.gz; its "
                                        r"EnhancerPredictionsAllPutative.txt.gz members: synthA_DNase"):
        build_candidates_from_abc(entry["abc_zip"], demo_gene_tables["synthA"], tmp_path / "o.tsv",
                                  member="x/EnhancerPredictionsAllPutative.txt.gz")
    gl = demo_mirror["cells"]["synthA"]["genelist"]
    with pytest.raises(DataError, match=r"GeneList.txt: missing column .TargetGene."):
        build_candidates_from_abc(gl, demo_gene_tables["synthA"], tmp_path / "o.tsv")
    bad = tmp_path / "other.txt"
    bad.write_text(text.replace("ENSG9", "ENSX9"))
    with pytest.raises(DataError, match=r"other.txt: no TargetGene matches a gene ID or gene name"):
        build_candidates_from_abc(bad, demo_gene_tables["synthA"], tmp_path / "o.tsv")
    lines = text.splitlines()
    lines[1] = lines[1].replace("chr1\t", "chr2\t", 1)  # an element on another chromosome than its gene
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"other.txt: element .* of gene ENSG90000000001 is on chr2, the gene on chr1"):
        build_candidates_from_abc(bad, demo_gene_tables["synthA"], tmp_path / "o.tsv")
    assert not (tmp_path / "o.tsv").exists()


def test_read_candidates_checks_the_table(abc_candidates, tmp_path):
    table = abc_candidates["synthA"][1]
    path = tmp_path / "c.tsv"
    write_candidates(table.drop(index=[1]), path)  # a gap in the first gene's ranks
    with pytest.raises(DataError, match=r"c.tsv: gene ENSG90000000001 does not have ranks 0..n"):
        read_candidates(path)
    table.drop(columns="hic").to_csv(path, sep="\t", index=False)
    with pytest.raises(DataError, match=r"c.tsv: candidates table lacks column 'hic'"):
        read_candidates(path)


@pytest.fixture(scope="module")
def peak_candidates(demo_mirror, demo_gene_tables, tmp_path_factory):
    """synthC (no ABC run) from hand-placed peaks around its first chr22 genes (BED, Ensembl chromosome names)."""
    genes = read_gene_table(demo_gene_tables["synthC"])
    g = genes[genes["chrom"] == "chr22"].iloc[:3]
    t0 = int(g["tss"].iat[1])
    peaks = [(t0 + 4000, t0 + 4400), (t0 - 20_000, t0 - 19_000), (t0 + 700, t0 + 1100),  # kept, kept, mid 900: out
             (t0 + 60_000, t0 + 63_500), (t0 + 60_500, t0 + 60_700),  # a long peak and one nested in it
             (t0 + 150_000, t0 + 150_300)]  # too far for gene 1
    d = tmp_path_factory.mktemp("peakcand")
    bed = d / "peaks.bed"
    bed.write_text("".join(f"22\t{s}\t{e}\tp{i}\t0\t.\n" for i, (s, e) in enumerate(sorted(peaks))))
    entry = demo_mirror["cells"]["synthC"]
    hic = {"path": entry["hic"]["path"], "normalization": "NONE", "resolution": 5000}
    res = build_candidates_from_peaks(bed, demo_gene_tables["synthC"], d / "synthC.tsv", h3k27ac=entry["h3k27ac"]["path"],
                                      dnase=entry["dnase"]["path"], hic=hic)
    return res, read_candidates(d / "synthC.tsv"), g, t0


def test_peak_candidates_activity_and_contact(peak_candidates, demo_mirror):
    res, table, g, t0 = peak_candidates
    gid = g["gene_id"].iat[1]
    rows = table[table["gene_id"] == gid]
    assert (rows["source"] == "peaks").all() and rows["abc_score"].isna().all()
    assert rows["name"].tolist() == ["promoter", f"chr22:{t0 + 4000}-{t0 + 4400}", f"chr22:{t0 - 20000}-{t0 - 19000}",
                                     f"chr22:{t0 + 60500}-{t0 + 60700}", f"chr22:{t0 + 60000}-{t0 + 63500}"]
    np.testing.assert_allclose(rows["distance"].iloc[1:], [4200, 19500, 60600, 61750])
    entry = demo_mirror["cells"]["synthC"]
    k27, dn = pyBigWig.open(entry["h3k27ac"]["path"]), pyBigWig.open(entry["dnase"]["path"])
    hf = hicstraw.HiCFile(entry["hic"]["path"])
    mzd = hf.getMatrixZoomData("22", "22", "observed", "NONE", "BP", 5000)

    def contact(a, b):
        recs = mzd.getRecords(min(a, b) * 5000, min(a, b) * 5000, max(a, b) * 5000, max(a, b) * 5000)
        return sum(r.counts for r in recs if {r.binX // 5000, r.binY // 5000} == {a, b})

    tss = int(rows["tss"].iat[0])
    tb = tss // 5000
    qc = sum(contact(tb, b) for b in range((tss - 500) // 5000, (tss + 499) // 5000 + 1))
    for r in rows.iloc[1:].itertuples():
        mean = lambda bw, c: (bw.stats(c, r.start, r.end, type="sum", exact=True)[0] or 0.0) / (r.end - r.start)
        assert r.activity == pytest.approx(np.sqrt(mean(k27, "chr22") * mean(dn, "22")), rel=1e-5)
        eb = int(np.floor((r.start + r.end) / 2 / 5000))
        want = transform_hic(np.array([[contact(tb, eb)]], float), np.array([qc]), np.array([eb - tb]), 5000)[0, 0]
        assert r.hic == pytest.approx(float(want), rel=1e-5)
    # genes of other chromosomes (no peaks there) keep their promoter alone
    assert res["candidates"]["min"] == 0 and candidate_counts(table)[g["gene_id"].iat[0]] >= 3


def test_batcher_places_elements_as_epinformer(abc_candidates, demo_gene_tables, demo_fasta):
    _, table = abc_candidates["synthA"]
    genes = read_gene_table(demo_gene_tables["synthA"])
    counts = candidate_counts(table)
    edge = genes.loc[genes["tss"] == 350, "gene_id"].iat[0]  # chr22, 350 bp from the start
    few = counts[(counts > 0) & (counts < 60)].index[0]
    ids = [counts.idxmax(), few, counts[counts == 0].index[0], edge]
    # one element made longer than 2 kb: it is cut to the 2 kb around its centre
    table = table.copy()
    long_row = table.index[(table["gene_id"] == ids[0]) & (table["rank"] == 2)][0]
    table.loc[long_row, "end"] = table.loc[long_row, "start"] + 3001
    reader = FastaCodes(demo_fasta)
    batcher = ElementBatcher(table, genes, reader)
    ex = batcher.extras(ids)
    seq, feat, mask = ex["elements_seq"], ex["elements_feat"], ex["elements_mask"]
    assert seq.shape == (4, 61, 2000, 4) and seq.dtype == torch.float32
    assert feat.shape == (4, 61, 3) and mask.shape == (4, 61) and mask.dtype == torch.bool
    present = torch.arange(61)[None, :] <= torch.tensor([counts[i] for i in ids])[:, None]
    # a slot whose window holds no base (here: an element inside a run of N) is masked, as EPInformer does
    assert torch.equal(mask, present & (seq.sum(dim=(2, 3)) > 0)) and mask[:, 0].all()
    assert (present & ~mask).sum() == 1 and not mask[3, ~mask[3] & present[3]].any()
    assert seq[~mask].abs().sum() == 0 and feat[~present].abs().sum() == 0 and feat[:, 0].abs().sum() == 0
    fa = pyfaidx.Fasta(str(demo_fasta))
    codes = lambda chrom, s, e: np.frombuffer(str(fa[chrom][s:e]).encode(), np.uint8)
    lookup = np.full(256, 4, np.uint8)
    lookup[np.frombuffer(b"ACGT", np.uint8)] = np.arange(4)
    g = genes.set_index("gene_id")
    for b, gid in enumerate(ids):
        rows = table[table["gene_id"] == gid].sort_values("rank")
        prom = lookup[codes(g.at[gid, "chrom"], max(g.at[gid, "tss"] - 1000, 0), g.at[gid, "tss"] + 1000)]
        want = np.full(2000, 4, np.uint8)
        want[2000 - len(prom):] = prom  # the edge gene's window starts before the chromosome
        assert torch.equal(seq[b, 0], torch.from_numpy(one_hot(want)))
        for r in rows.iloc[1:].itertuples():
            got = seq[b, r.rank]
            length = r.end - r.start
            if length > 2000:
                c = (r.start + r.end) // 2
                assert torch.equal(got, torch.from_numpy(one_hot(lookup[codes(r.chrom, c - 1000, c + 1000)])))
            else:
                o = 1000 - length // 2
                assert torch.equal(got[o : o + length], torch.from_numpy(one_hot(lookup[codes(r.chrom, r.start, r.end)])))
                assert got[:o].sum() == 0 and got[o + length :].sum() == 0
            np.testing.assert_allclose(feat[b, r.rank].numpy(), [r.distance / 1000, r.hic, r.activity], rtol=1e-6)
    assert (table.loc[long_row, "end"] - table.loc[long_row, "start"]) > 2000
    # the model takes these extras (a small EPInformer at 400 bp x 4 elements: the same wiring)
    small = ElementBatcher(table, genes, reader, n_elements=4, element_length=400).extras(ids)
    assert small["elements_seq"].shape == (4, 5, 400, 4)
    assert torch.equal(small["elements_seq"][0, 0], seq[0, 0, 800:1200])  # promoter window = tss +- 200
    batch = Batch(seq=torch.zeros(4, 400, 4), signals=torch.zeros(4, 3, 400), features=torch.zeros(4, 9),
                  target=torch.zeros(4), index=torch.arange(4), extra=small)
    model = EPInformer(n_elements=4, element_length=400, d_model=32, n_layer=1, n_head=2)
    out = model.forward_batch(batch, mode="train")
    assert out["pred"].shape == (4,) and torch.isfinite(model.loss(out, batch.target)["loss"])
    with pytest.raises(DataError, match="gene ENSGX is not in the candidates table"):
        batcher.extras(["ENSGX"])
    moved = genes.copy()
    moved.loc[0, "tss"] += 1
    with pytest.raises(DataError, match=rf"candidates table: gene {moved.at[0, 'gene_id']} is at chr1:"):
        ElementBatcher(table, moved, reader)


def test_fasta_codes_pad_past_the_ends(demo_fasta, demo_mirror):
    reader = FastaCodes(demo_fasta)
    size = demo_mirror["chromosomes"]["chr22"]
    tail = reader("22", size - 5, size + 3)  # Ensembl naming maps to the FASTA's chr22
    assert tail.dtype == np.uint8 and tail.shape == (8,) and (tail[5:] == 4).all() and (tail[:5] < 4).all()
    assert (reader("chr22", -3, 2)[:3] == 4).all()
    with pytest.raises(DataError, match="chromosome chr7 is missing"):
        reader("chr7", 0, 10)
