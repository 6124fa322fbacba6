"""MACS3 DNase peaks from a real (pyBigWig-written) demo bigWig, checked against the bigWig's own values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyBigWig
import pytest

from prism.genes import DataError
from prism.peaks import call_dnase_peaks, read_peaks

CUTOFF, MIN_LENGTH, MAX_GAP = 2.0, 200, 30


@pytest.fixture(scope="module")
def synthc_peaks(demo_mirror, tmp_path_factory):
    """synthC's DNase bigWig names chromosomes "1", "X": peaks of two of them, asked for in either naming."""
    out = tmp_path_factory.mktemp("peaks") / "synthC" / "dnase.macs3.narrowPeak"
    res = call_dnase_peaks(demo_mirror["cells"]["synthC"]["dnase"]["path"], out, chromosomes=["21", "chr22"],
                           cutoff=CUTOFF, min_length=MIN_LENGTH, max_gap=MAX_GAP)
    return res


def test_peaks_follow_the_threshold_rule(synthc_peaks, demo_mirror):
    """Each peak: starts and ends on bases >= cutoff, inner gaps <= max_gap, length >= min_length; and every
    run of >= min_length bases at or above the cutoff lies inside a peak."""
    peaks = read_peaks(synthc_peaks["path"])
    assert list(peaks) == ["chr21", "chr22"]  # our names, natural order, only the asked chromosomes
    assert synthc_peaks["per_chrom"] == {c: len(v) for c, v in peaks.items()} and synthc_peaks["n_peaks"] > 40
    bw = pyBigWig.open(demo_mirror["cells"]["synthC"]["dnase"]["path"])
    for chrom, iv in peaks.items():
        name = chrom.removeprefix("chr")
        above = np.nan_to_num(bw.values(name, 0, bw.chroms(name), numpy=True)) >= CUTOFF
        assert np.all(np.diff(iv[:, 0]) >= 0) and np.all(iv[1:, 0] >= iv[:-1, 1])  # sorted, disjoint
        covered = np.zeros(len(above), dtype=bool)
        for s, e in iv:
            seg = above[s:e]
            assert e - s >= MIN_LENGTH and seg[0] and seg[-1]
            edges = np.diff(np.r_[1, seg.astype(np.int8), 1])
            assert np.all(np.flatnonzero(edges == 1) - np.flatnonzero(edges == -1) <= MAX_GAP)
            covered[s:e] = True
        edges = np.diff(np.r_[0, above.astype(np.int8), 0])
        for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            if e - s >= MIN_LENGTH:
                assert covered[s:e].all(), (chrom, s, e)


def test_narrowpeak_columns(synthc_peaks):
    lines = Path(synthc_peaks["path"]).read_text().splitlines()
    cols = [line.split("\t") for line in lines]
    assert all(len(c) == 10 for c in cols)
    names = [c[3] for c in cols]
    assert len(set(names)) == len(names) and names[0] == "chr21_peak1"
    for c in cols:
        assert c[5] == "." and 0 <= int(c[9]) < int(c[2]) - int(c[1])  # summit offset inside the peak
    assert not list(Path(synthc_peaks["path"]).parent.glob(".*tmp"))  # written atomically


def test_bad_input_is_one_line(tmp_path, demo_mirror):
    bed = tmp_path / "bad.bed"
    bed.write_text("track name=x\nchr1\t10\t20\nchr1\t30\n")
    with pytest.raises(DataError, match=r"bad.bed: line 3 has 2 tab-separated columns"):
        read_peaks(bed)
    bed.write_text("chr1\t10\tx\n")
    with pytest.raises(DataError, match=r"bad.bed: line 1: start/end"):
        read_peaks(bed)
    bed.write_text("1\t50\t60\n1\t5\t9\nX\t7\t8\n")
    got = read_peaks(bed)
    assert list(got) == ["chr1", "chrX"] and got["chr1"].tolist() == [[5, 9], [50, 60]] and got["chr1"].dtype == np.int64
    with pytest.raises(DataError, match="not found"):
        read_peaks(tmp_path / "none.bed")
    with pytest.raises(DataError, match=r"chromosome chr7 is missing"):
        call_dnase_peaks(demo_mirror["cells"]["synthA"]["dnase"]["path"], tmp_path / "p.narrowPeak", chromosomes=["chr7"])
    with pytest.raises(DataError, match="not a readable bigWig"):
        call_dnase_peaks(demo_mirror["genome"], tmp_path / "p.narrowPeak")
    with pytest.raises(ValueError, match="min_length"):
        call_dnase_peaks(demo_mirror["cells"]["synthA"]["dnase"]["path"], tmp_path / "p.narrowPeak", min_length=0)
    assert not (tmp_path / "p.narrowPeak").exists()
