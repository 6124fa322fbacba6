"""Every input file is checked when it is read: truncated or corrupt bigWig, bigBed, .hic and FASTA files of
the demo mirror fail with one line naming the file; a chromosome the genes need that a file lacks is an
error (or, asked for, a logged zero signal); soft-masked genomes give the shards of their upper-case form."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd
import pyBigWig
import pyfaidx
import pytest

from prism.demo import write_hic
from prism.genes import DataError, bigwig_window_sums, read_gene_table
from prism.preprocess import build_shard, gunzip_fasta
from prism.shards import read_shard

W = 600
CHROM = "chr22"


@pytest.fixture
def shard_of(demo_mirror, demo_fasta, demo_gene_tables, tmp_path):
    """build_shard of synthA's chr22 with one input replaced; returns the shard's arrays."""
    entry = demo_mirror["cells"]["synthA"]

    def build(*, fasta=demo_fasta, h3k27ac=entry["h3k27ac"]["path"], footprints=entry["footprints"]["path"],
              hic=entry["hic"]["path"], chrom=CHROM, **kw):
        out = tmp_path / f"{chrom}.npz"
        info = build_shard(genes_tsv=demo_gene_tables["synthA"], chrom=chrom, fasta=fasta,
                           tracks={"h3k27ac": h3k27ac, "footprints": (footprints, "bigbed")},
                           hic={"path": hic, "normalization": "NONE", "resolution": 5000}, window=W, out=out, **kw)
        return {**read_shard(out), "info": info}

    return build


def cut(src, dest, keep: float):
    """A copy of src holding its first `keep` fraction of bytes (a download or copy cut short)."""
    data = open(src, "rb").read()
    dest.write_bytes(data[: int(len(data) * keep)])
    return str(dest)


def one_line_error(fn, pattern: str) -> str:
    with pytest.raises(DataError, match=pattern) as exc:
        fn()
    assert "\n" not in str(exc.value)
    return str(exc.value)


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_bigwig_is_one_line_naming_the_file(demo_mirror, shard_of, tmp_path, keep):
    bad = cut(demo_mirror["cells"]["synthA"]["h3k27ac"]["path"], tmp_path / "h3k27ac.bigWig", keep)
    one_line_error(lambda: shard_of(h3k27ac=bad), rf"^{bad}: not a readable bigWig \(truncated: ")
    assert not (tmp_path / f"{CHROM}.npz").exists()


def test_corrupt_bigwig_block_is_one_line_naming_file_and_chromosome(demo_mirror, shard_of, tmp_path):
    import struct

    src = demo_mirror["cells"]["synthA"]["h3k27ac"]["path"]
    data = bytearray(open(src, "rb").read())
    full_data, full_index = struct.unpack("<QQ", data[16:32])
    mid = (full_data + full_index) // 2
    data[mid : mid + 64] = bytes(64)  # zeros over compressed data blocks, the file's length unchanged
    bad = tmp_path / "corrupt.bigWig"
    bad.write_bytes(bytes(data))
    bw = pyBigWig.open(str(bad))
    broken = []
    for chrom, length in bw.chroms().items():
        try:
            bw.values(chrom, 0, length)
        except RuntimeError:
            broken.append(chrom)
    bw.close()
    assert broken
    one_line_error(lambda: shard_of(h3k27ac=str(bad), chrom=broken[0]),
                   rf"^{bad}: reading {broken[0]}:\d+-\d+ failed \(.*truncated or corrupt bigWig\?\)$")


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_bigbed_is_one_line_naming_the_file(demo_mirror, shard_of, tmp_path, keep):
    bad = cut(demo_mirror["cells"]["synthA"]["footprints"]["path"], tmp_path / "fp.bigBed", keep)
    one_line_error(lambda: shard_of(footprints=bad), rf"^{bad}: not a readable bigBed \(truncated: ")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_hic_is_one_line_naming_the_file_never_zeros(demo_mirror, shard_of, tmp_path, keep):
    # hicstraw opens every one of these and returns no contacts ("File doesn't have the given chr_chr map")
    bad = cut(demo_mirror["cells"]["synthA"]["hic"]["path"], tmp_path / "x.hic", keep)
    one_line_error(lambda: shard_of(hic=bad), rf"^{bad}: truncated \.hic: ")
    one_line_error(lambda: shard_of(hic=bad, missing="zeros"), rf"^{bad}: truncated \.hic: ")


def test_not_a_hic_file(shard_of, demo_fasta):
    one_line_error(lambda: shard_of(hic=str(demo_fasta)), r"hg38.ml.fa: not a .hic file \(no HIC signature")


def _hic_with_contacts_on(path, mirror, chroms):
    """A real .hic (hictkpy) of all demo chromosomes, with contacts on `chroms` only."""
    sizes = dict(mirror["chromosomes"])
    pixels = pd.DataFrame([{"chrom1": c, "start1": s, "end1": s + 5000, "chrom2": c, "start2": s, "end2": s + 5000,
                            "count": 3} for c in chroms for s in range(0, 100_000, 5000)])
    write_hic(path, sizes, 5000, pixels, assembly="synthetic")
    return str(path)


def test_hic_without_the_chromosome_is_an_error_or_explicitly_zero(demo_mirror, shard_of, tmp_path, caplog):
    hic = _hic_with_contacts_on(tmp_path / "chr1.hic", demo_mirror, ["chr1"])
    one_line_error(lambda: shard_of(hic=hic), rf"^{hic}: no contacts of chr22 \(the file has no chr22-chr22 matrix\), "
                                              r"but genes on chr22 need its Hi-C$")
    with caplog.at_level(logging.WARNING, logger="prism.preprocess"):
        s = shard_of(hic=hic, missing="zeros")
    assert "chr1.hic: no contacts of chr22: its Hi-C is all 0 (missing='zeros')" in caplog.text
    assert s["hic"].shape[1] > 0 and (s["hic"] == 0).all()
    assert (shard_of(hic=hic, chrom="chr1")["hic"] > 0).any()  # the same file's chr1 is read as before


def test_bigwig_without_the_chromosome_is_an_error_or_explicitly_zero(demo_mirror, shard_of, tmp_path, caplog):
    path = tmp_path / "chr1_only.bigWig"
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader([("chr1", demo_mirror["chromosomes"]["chr1"])])
    bw.addEntries(["chr1"], [10], ends=[20], values=[1.0])
    bw.close()
    one_line_error(lambda: shard_of(h3k27ac=str(path)), rf"^{path}: chromosome chr22 is missing \(file has 1 "
                                                        r"chromosomes\), but genes on chr22 need its track$")
    with caplog.at_level(logging.WARNING, logger="prism.preprocess"):
        s = shard_of(h3k27ac=str(path), missing="zeros")
    assert (s["tracks"][:, 0] == 0).all() and "its track is all 0 (missing='zeros')" in caplog.text
    with pytest.raises(ValueError, match="missing='skip': expected one of error, zeros"):
        shard_of(missing="skip")


def _indexed_copy(demo_fasta, dest):
    shutil.copy(demo_fasta, dest)
    pyfaidx.Fasta(str(dest)).close()  # the .fai, as the workflow's genome rule writes it
    return dest


def test_fasta_cut_short_after_indexing_is_one_line(demo_fasta, shard_of, tmp_path):
    fa = _indexed_copy(demo_fasta, tmp_path / "g.fa")
    with open(fa, "r+b") as f:
        f.truncate(fa.stat().st_size // 2)
    one_line_error(lambda: shard_of(fasta=fa), rf"^{fa}: truncated FASTA: its index g.fa.fai says chrX ends at byte "
                                               r"[\d,]+ but the file has [\d,]+ bytes")


def test_corrupt_fasta_is_one_line(demo_fasta, shard_of, tmp_path):
    lines = demo_fasta.read_bytes().split(b"\n")
    lines[5] = lines[5][:30]  # a line cut short inside chr1
    bad = tmp_path / "short_line.fa"
    bad.write_bytes(b"\n".join(lines))
    one_line_error(lambda: shard_of(fasta=bad), rf"^{bad}: not a readable FASTA \(Line length of fasta file is not "
                                                r"consistent!")
    # zeros over bases of chr22 (a disk block lost), line lengths intact: pyfaidx reads them as sequence
    fa = _indexed_copy(demo_fasta, tmp_path / "zeros.fa")
    offset = int([r.split("\t") for r in open(f"{fa}.fai").read().splitlines() if r.startswith("chr22")][0][2])
    data = bytearray(fa.read_bytes())
    data[offset + 1000 : offset + 1010] = bytes(10)
    fa.write_bytes(bytes(data))
    pyfaidx.Fasta(str(fa)).close()
    one_line_error(lambda: shard_of(fasta=fa), rf"^{fa}: chr22 has byte 0x00 at base [\d,]+, not a sequence letter "
                                               r"\(corrupt FASTA\?\)$")


def test_truncated_genome_download_is_one_line(demo_mirror, tmp_path):
    bad = cut(demo_mirror["genome"], tmp_path / "hg38.ml.fa.gz", 0.5)
    one_line_error(lambda: gunzip_fasta(bad, tmp_path / "g.fa"), rf"^{bad}: cannot gunzip \(")
    assert not (tmp_path / "g.fa").exists()


def test_truncated_cage_bigwig_in_the_gene_table_is_one_line(demo_mirror, demo_gene_tables, tmp_path):
    genes = read_gene_table(demo_gene_tables["synthA"])
    bad = cut(demo_mirror["cells"]["synthA"]["h3k27ac"]["path"], tmp_path / "cage.bigWig", 0.6)
    one_line_error(lambda: bigwig_window_sums(bad, genes["chrom"], genes["tss"], 192), rf"^{bad}: not a readable bigWig \(truncated: ")


def test_soft_masked_genome_gives_the_shards_of_its_upper_case_form(demo_fasta, shard_of, tmp_path):
    upper = shard_of()
    lines = demo_fasta.read_text().splitlines()
    rng = np.random.default_rng(0)
    masked = tmp_path / "soft.fa"
    # lower-case runs as RepeatMasker leaves them (UCSC, Ensembl): about half of all sequence lines
    masked.write_text("\n".join(line.lower() if not line.startswith(">") and rng.random() < 0.5 else line
                                for line in lines) + "\n")
    soft = shard_of(fasta=masked)
    for key in ("gene_id", "seq", "tracks", "hic"):
        np.testing.assert_array_equal(soft[key], upper[key])
    assert upper["info"]["soft_masked_fraction"] == 0.0
    assert 0.4 < soft["info"]["soft_masked_fraction"] < 0.6
    assert soft["info"]["n_fraction"] == upper["info"]["n_fraction"]


def test_n_and_ambiguity_codes_are_n_and_counted(shard_of, tmp_path, demo_mirror):
    size = demo_mirror["chromosomes"][CHROM]
    other = {c: n for c, n in demo_mirror["chromosomes"].items() if c != CHROM}
    seq = np.array(list("ACGTacgtNnRYKMSWBDHVryk"), dtype="<U1")[np.arange(size) % 23]
    fa = tmp_path / "iupac.fa"
    with open(fa, "w") as f:
        for name, n in [(CHROM, size), *other.items()]:
            s = "".join(seq[:n]) if name == CHROM else "A" * n
            f.write(f">{name}\n" + "\n".join(s[i : i + 60] for i in range(0, n, 60)) + "\n")
    s = shard_of(fasta=fa)
    assert set(np.unique(s["seq"])) == {0, 1, 2, 3, 4}
    assert s["info"]["n_fraction"] == pytest.approx(15 / 23, abs=0.01)  # N, n and 13 IUPAC letters of 23
    assert s["info"]["soft_masked_fraction"] == pytest.approx(8 / 23, abs=0.01)  # acgt, n, r, y, k
