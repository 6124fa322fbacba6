"""prism.predict.write_predictions: a TSV, and a BED a genome browser (and pybedtools) reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pybedtools
import pytest

from prism.genes import DataError
from prism.predict import bed_scores, write_predictions

GENES = ["ENSG03", "ENSG01", "ENSG02", "ENSG04"]
CHROMS = ["chr2", "chr1", "chr1", "chrX"]
TSS = np.array([500, 1200, 40, 0], dtype=np.int64)
PRED = np.array([2.5, 0.5, 1.0, 3.0])


def test_tsv_and_bed(tmp_path):
    tsv, bed = tmp_path / "out" / "K562.tsv", tmp_path / "out" / "K562.bed"
    write_predictions(GENES, CHROMS, TSS, PRED, tsv, bed, name="prism-K562-seed2")

    table = pd.read_csv(tsv, sep="\t", dtype={"gene_id": str})
    assert list(table.columns) == ["gene_id", "chrom", "tss", "prediction"]
    assert table["gene_id"].tolist() == GENES and table["tss"].tolist() == TSS.tolist()
    np.testing.assert_allclose(table["prediction"], PRED)

    lines = bed.read_text().splitlines()
    assert lines[0].startswith('track name="prism-K562-seed2" description="') and "useScore=1" in lines[0]
    assert "score 0-1000 = prediction 0.5000-3.0000" in lines[0]
    features = list(pybedtools.BedTool(str(bed)))
    assert [(f.chrom, f.start, f.end) for f in features] == [
        ("chr2", 500, 501), ("chr1", 40, 41), ("chr1", 1200, 1201), ("chrX", 0, 1)]
    assert [f.name for f in features] == ["ENSG03|2.5000", "ENSG02|1.0000", "ENSG01|0.5000", "ENSG04|3.0000"]
    assert [int(f.score) for f in features] == [800, 200, 0, 1000]
    assert [f.strand for f in features] == [".", ".", ".", "."]
    assert [p for p in tmp_path.joinpath("out").iterdir() if p.name.startswith(".")] == []  # no temporaries left


def test_scores():
    assert bed_scores(np.array([1.0, 1.0])).tolist() == [1000, 1000]
    assert bed_scores(np.array([])).tolist() == []
    assert bed_scores(np.array([0.0, 0.25, 1.0])).tolist() == [0, 250, 1000]


def test_bad_input_is_one_line_naming_the_gene(tmp_path):
    tsv, bed = tmp_path / "a.tsv", tmp_path / "a.bed"
    with pytest.raises(DataError, match=r"gene ENSG01 has prediction nan"):
        write_predictions(GENES, CHROMS, TSS, [2.5, np.nan, 1.0, 3.0], tsv, bed, name="x")
    with pytest.raises(DataError, match=r"gene ENSG02 has TSS -1 < 0"):
        write_predictions(GENES, CHROMS, [500, 1200, -1, 0], PRED, tsv, bed, name="x")
    with pytest.raises(ValueError, match="4 gene ids but 4 chromosomes, 3 TSS"):
        write_predictions(GENES, CHROMS, TSS[:3], PRED, tsv, bed, name="x")
    with pytest.raises(ValueError, match="track name 'my track'"):
        write_predictions(GENES, CHROMS, TSS, PRED, tsv, bed, name="my track")
    assert not tsv.exists() and not bed.exists()


def test_measured_values_beside_the_predictions(tmp_path):
    import numpy as np
    import pandas as pd

    from prism.predict import write_predictions

    write_predictions(["G1", "G2"], ["chr1", "chr1"], np.array([10, 20]), np.array([1.5, 2.5]),
                      tmp_path / "p.tsv", tmp_path / "p.bed", name="synthD-prism", measured=np.array([np.nan, 2.0]))
    df = pd.read_csv(tmp_path / "p.tsv", sep="\t")
    assert list(df.columns) == ["gene_id", "chrom", "tss", "prediction", "measured"]
    assert np.isnan(df["measured"][0]) and df["measured"][1] == 2.0
