"""Preprocessing at hg38 scale: time, peak memory and shard sizes for one cell line (a script, not a test).

    .venv/bin/python benchmarks/preprocess_benchmark.py [--workdir /tmp/prism_preprocess_bench]
        [--windows 2000 10000] [--jobs 2] [--seed 0] [--resynth]

1. Synthesises, under --workdir (kept and reused on a second call unless --resynth), inputs of the real
   sizes and formats: the 24 GRCh38 chromosomes at their real lengths (random sequence, N telomeres) in
   a FASTA with its .fai; 18,377 genes with a split CSV, a half-life CSV, an expression CSV and an ABC
   GeneList inside a zip; H3K27ac and DNase bigWigs (bedGraph-style runs: a low background in runs of
   a few hundred bp, peaks at most TSSs and at random distal sites, no data over the N telomeres);
   a 5 kb .hic with contacts for bin pairs up to 2 Mb apart, sparser and weaker with distance
   (power law, exponent 0.87). Synthesis time is reported apart.
2. Preprocesses them as the workflow does: rule gene_table (prism.genes.build_gene_table from the zip
   member) once, then rule shard (prism.preprocess.build_shard) per chromosome of the paper's config
   (chr1..22, X) for each window. Every step runs in its own process; its peak RSS comes from
   os.wait4. --jobs processes run at once (longest chromosome first), as `snakemake --cores 2` would.
3. Prints per-chromosome and total wall time and peak RSS, the shard sizes, and the size of the
   reference layout (a 200,000-float32 Hi-C vector per TSS) against ours.

Hi-C is read with normalisation NONE: hictkpy writes no VC vectors (DATA.md); the read path is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

#: GRCh38 primary chromosome lengths (bp)
GRCH38 = {
    "chr1": 248_956_422, "chr2": 242_193_529, "chr3": 198_295_559, "chr4": 190_214_555,
    "chr5": 181_538_259, "chr6": 170_805_979, "chr7": 159_345_973, "chr8": 145_138_636,
    "chr9": 138_394_717, "chr10": 133_797_422, "chr11": 135_086_622, "chr12": 133_275_309,
    "chr13": 114_364_328, "chr14": 107_043_718, "chr15": 101_991_189, "chr16": 90_338_345,
    "chr17": 83_257_441, "chr18": 80_373_285, "chr19": 58_617_616, "chr20": 64_444_167,
    "chr21": 46_709_983, "chr22": 50_818_468, "chrX": 156_040_895, "chrY": 57_227_415,
}
#: the chromosomes of config/config.yaml (genes come from these; chrY holds none)
GENE_CHROMS = [c for c in GRCH38 if c != "chrY"]
N_GENES = 18_377
CELL = "K562"
EXPR_COLUMN = "K562_CAGE_128*3_sum"
MEMBER = "K562_ABC/Neighborhoods/GeneList.txt"
HIC_RES = 5000
HIC_REACH_BINS = 400  # 2 Mb
TELOMERE = 10_000  # N bases at each chromosome end
STEP = 20  # bp per step of the synthetic signal grid
REFERENCE_FLOATS = 200_000  # the reference stores this many float32 Hi-C values per TSS
HALFLIFE = ["UTR5LEN_log10zscore", "CDSLEN_log10zscore", "INTRONLEN_log10zscore", "UTR3LEN_log10zscore",
            "UTR5GC", "CDSGC", "UTR3GC", "ORFEXONDENSITY"]


# ---------------------------------------------------------------- synthesis


def _write_fasta(path: Path, rng, sizes: dict = GRCH38) -> None:
    """60-column FASTA and its .fai of the chromosomes `sizes`, written from numpy bytes one at a time."""
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    fai = []
    with open(path, "wb") as fh:
        for chrom, size in sizes.items():
            header = f">{chrom}\n".encode()
            fh.write(header)
            offset = fh.tell()
            seq = letters[rng.integers(0, 4, size=size, dtype=np.uint8)]
            seq[:TELOMERE] = ord("N")
            seq[-TELOMERE:] = ord("N")
            full = size // 60
            lines = np.empty((full, 61), dtype=np.uint8)
            lines[:, :60] = seq[: full * 60].reshape(full, 60)
            lines[:, 60] = ord("\n")
            fh.write(lines.tobytes())
            del lines
            if size % 60:
                fh.write(seq[full * 60 :].tobytes() + b"\n")
            fai.append(f"{chrom}\t{size}\t{offset}\t60\t61\n")
    Path(str(path) + ".fai").write_text("".join(fai))


def _place_genes(rng, chroms=GENE_CHROMS, n_genes: int = N_GENES):
    """(chrom, tss) of n_genes genes on `chroms`, proportional to length; a few within 5 kb of a chromosome end."""
    import pandas as pd

    sizes = np.array([GRCH38[c] for c in chroms], dtype=np.float64)
    counts = np.floor(sizes / sizes.sum() * n_genes).astype(int)
    counts[np.argsort(-sizes)[: n_genes - counts.sum()]] += 1
    rows = []
    for chrom, n in zip(chroms, counts):
        size = GRCH38[chrom]
        tss = rng.choice(np.arange(TELOMERE, size - TELOMERE, 200), size=n, replace=False)
        tss[:2] = [TELOMERE + 1500, size - TELOMERE - 2500]  # windows of 10 kb+ reach the N telomere
        rows.append(pd.DataFrame({"chrom": chrom, "tss": np.sort(tss)}))
    genes = pd.concat(rows, ignore_index=True)
    genes["gene_id"] = [f"ENSG{10_000_000_000 + i:011d}" for i in range(len(genes))]
    return genes


def _write_tables(root: Path, genes, rng) -> dict:
    import pandas as pd

    split_of = {c: "train" for c in GENE_CHROMS} | {"chr3": "valid", "chr21": "valid", "chr22": "test", "chrX": "test"}
    n = len(genes)
    split = pd.DataFrame({"ENSID": genes["gene_id"], "chrom": genes["chrom"]})
    for k in range(1, 13):
        split[f"fold_{k}"] = genes["chrom"].map(split_of)
    split["fold_enformer"] = "train"
    split["Gene name"] = [f"G{i}" for i in range(n)]
    hl = pd.DataFrame({"ENSID": genes["gene_id"], "chrom": genes["chrom"], "TSS": genes["tss"]})
    for f in HALFLIFE:
        hl[f] = np.round(rng.normal(0, 1, n), 6)
    expr = pd.DataFrame({"ENSID": genes["gene_id"], EXPR_COLUMN: np.round(rng.lognormal(2, 2, n), 3)})
    gl = pd.DataFrame({"chr": genes["chrom"], "symbol": genes["gene_id"], "tss": genes["tss"],
                       "H3K27ac.RPM.TSS1Kb": np.round(rng.gamma(2, 5, n), 4),
                       "DHS.RPM.TSS1Kb": np.round(rng.gamma(2, 3, n), 4)})
    paths = {"split": root / "split.csv", "halflife": root / "halflife.csv", "expression": root / "expression.csv",
             "genelist": root / "abc_K562.zip"}
    split.to_csv(paths["split"], index=False)
    hl.to_csv(paths["halflife"], index=False)
    expr.to_csv(paths["expression"], index=False)
    with zipfile.ZipFile(paths["genelist"], "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MEMBER, gl.to_csv(sep="\t", index=False))
        zf.writestr("K562_ABC/Neighborhoods/EnhancerList.txt", "chr\tstart\tend\n")
    return {k: str(v) for k, v in paths.items()}


def _write_bigwig(path: Path, genes, rng, *, peak_width_steps: int, peak_height: float, background: float,
                  sizes: dict = GRCH38, step: int = STEP, jitter: float = 0.0) -> int:
    """bedGraph-style bigWig over the chromosomes `sizes` (all 24 by default) on a grid of `step` bp;
    jitter > 0 multiplies each step by 1 + jitter * N(0, 1) (denser entries, as ENCODE's fold-change
    files). Returns the number of entries written."""
    import pyBigWig

    bw = pyBigWig.open(str(path), "w")
    bw.addHeader(list(sizes.items()), maxZooms=10)
    total = 0
    half = 2 * peak_width_steps
    shape = np.exp(-0.5 * (np.arange(-half, half + 1) / (peak_width_steps / 2)) ** 2).astype(np.float32)
    for chrom, size in sizes.items():
        nstep = -(-size // step)
        # background: piecewise constant over segments of ~400 bp (20 steps on average)
        seg_len = rng.geometric(1 / 20, size=nstep // 10 + 10)
        edges = np.cumsum(seg_len)
        edges = edges[: np.searchsorted(edges, nstep) + 1]
        seg_val = np.round(background * rng.gamma(2.0, 0.5, len(edges)), 2).astype(np.float32)
        grid = np.repeat(seg_val, np.diff(np.concatenate([[0], edges])))[:nstep].copy()
        # peaks: at 70% of this chromosome's TSSs and at one distal site per 25 kb
        tss = genes.loc[genes["chrom"] == chrom, "tss"].to_numpy()
        centres = np.concatenate([tss[rng.random(len(tss)) < 0.7] // step, rng.integers(0, nstep, size // 25_000)])
        idx = np.clip(centres[:, None] + np.arange(-half, half + 1)[None, :], 0, nstep - 1)
        amp = (peak_height * rng.gamma(1.5, 1.0, len(centres))).astype(np.float32)
        np.add.at(grid, idx.ravel(), (amp[:, None] * shape[None, :]).ravel())
        if jitter:
            grid *= 1 + jitter * rng.standard_normal(nstep).astype(np.float32)
        grid = np.round(grid, 2)
        valid = np.ones(nstep, dtype=bool)  # no data over the N telomeres and a few random holes
        valid[: TELOMERE // step] = valid[-(TELOMERE // step) :] = False
        for h in rng.integers(0, nstep - 500, 20):
            valid[h : h + rng.integers(10, 500)] = False
        change = np.ones(nstep, dtype=bool)
        change[1:] = (grid[1:] != grid[:-1]) | (valid[1:] != valid[:-1])
        first = np.flatnonzero(change)
        last = np.append(first[1:], nstep)
        keep = valid[first]
        starts = first[keep].astype(np.int64) * step
        ends = np.minimum(last[keep].astype(np.int64) * step, size)
        bw.addEntries([chrom] * len(starts), starts, ends=ends, values=grid[first[keep]].astype(np.float64))
        total += len(starts)
    bw.close()
    return total


def _write_hic(path: Path, rng, sizes: dict = GRCH38, reach: int = HIC_REACH_BINS) -> int:
    """5 kb .hic of the chromosomes `sizes`, COO pixels up to `reach` bins off the diagonal; pixel density
    and counts fall as (k + 1)^-0.87 with the bin distance k. Returns the number of pixels."""
    import hictkpy
    import pandas as pd

    scratch = path.parent / "hictk_tmp"
    scratch.mkdir(exist_ok=True)
    writer = hictkpy.hic.FileWriter(str(path), dict(sizes), HIC_RES, assembly="GRCh38", n_threads=2,
                                    tmpdir=str(scratch), compression_lvl=6, skip_all_vs_all_matrix=True)
    offset, total = 0, 0
    for size in sizes.values():
        nb = -(-size // HIC_RES)
        b1, b2, cnt = [], [], []
        for k in range(min(reach, nb - 1) + 1):
            decay = (k + 1.0) ** -0.87
            rows = np.flatnonzero(rng.random(nb - k) < min(1.0, 2.0 * decay))
            b1.append(rows)
            b2.append(rows + k)
            cnt.append(1 + rng.poisson(40.0 * decay, len(rows)))
        px = pd.DataFrame({"bin1_id": np.concatenate(b1) + offset, "bin2_id": np.concatenate(b2) + offset,
                           "count": np.concatenate(cnt).astype(np.int32)})
        px = px.sort_values(["bin1_id", "bin2_id"], kind="stable", ignore_index=True)
        writer.add_pixels(px)
        total += len(px)
        offset += nb
    writer.finalize()
    return total


def synthesise(root: Path, seed: int) -> dict:
    import pandas as pd

    root.mkdir(parents=True, exist_ok=True)
    done = root / "inputs.json"
    if done.exists():
        return json.loads(done.read_text())
    rng = np.random.default_rng(seed)
    times = {}
    t = time.perf_counter()
    _write_fasta(root / "hg38.fa", rng)
    times["fasta"] = time.perf_counter() - t
    t = time.perf_counter()
    genes = _place_genes(rng)
    inputs = _write_tables(root, genes, rng)
    times["tables"] = time.perf_counter() - t
    entries = {}
    shapes = {"h3k27ac": {"peak_width_steps": 40, "peak_height": 8.0, "background": 0.6},
              "dnase": {"peak_width_steps": 12, "peak_height": 15.0, "background": 0.3}}
    for mark, kw in shapes.items():
        t = time.perf_counter()
        entries[mark] = _write_bigwig(root / f"{mark}.bigWig", genes, rng, **kw)
        times[mark] = time.perf_counter() - t
    t = time.perf_counter()
    hic_pixels = _write_hic(root / "hic.hic", rng)
    times["hic"] = time.perf_counter() - t
    inputs.update(fasta=str(root / "hg38.fa"), h3k27ac=str(root / "h3k27ac.bigWig"),
                  dnase=str(root / "dnase.bigWig"), hic=str(root / "hic.hic"),
                  synthesis_seconds=times, bigwig_entries=entries, hic_pixels=hic_pixels,
                  genes_per_chrom=pd.Series(genes["chrom"]).value_counts().to_dict())
    done.write_text(json.dumps(inputs, indent=1))
    return inputs


# ---------------------------------------------------------------- one step in a child process


def _child(argv: list[str]) -> None:
    step, args = argv[0], json.loads(argv[1])
    if step == "synth":
        synthesise(Path(args["root"]), args["seed"])
    elif step == "genes":
        from prism.genes import build_gene_table, write_gene_table

        df = build_gene_table(
            cell=CELL, split_csv=args["split"], halflife_csv=args["halflife"], fold="fold_11",
            expression={"source": "csv_column", "path": args["expression"], "column": EXPR_COLUMN},
            promoter_activity={"source": "abc_genelist", "path": args["genelist"], "member": MEMBER},
            chromosomes=GENE_CHROMS,
        )
        write_gene_table(df, args["out"])
    else:
        from prism.preprocess import build_shard

        build_shard(genes_tsv=args["genes"], chrom=args["chrom"], fasta=args["fasta"],
                    tracks={"h3k27ac": args["h3k27ac"], "dnase": args["dnase"]},
                    hic={"path": args["hic"], "normalization": "NONE", "resolution": HIC_RES},
                    window=args["window"], out=args["out"])


def _run_steps(steps: list[tuple[str, str, dict]], jobs: int) -> tuple[dict, float]:
    """Run (label, step, args) in child processes, `jobs` at once, in the given order.

    Returns ({label: (seconds, peak RSS bytes)}, wall seconds of the whole batch)."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    pending = list(steps)
    running: dict[int, tuple[str, float]] = {}
    out = {}
    t0 = time.perf_counter()
    while pending or running:
        while pending and len(running) < jobs:
            label, step, args = pending.pop(0)
            proc = subprocess.Popen([sys.executable, __file__, "_child", step, json.dumps(args)], env=env)
            running[proc.pid] = (label, time.perf_counter())
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        label, start = running.pop(pid)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"step {label} failed (exit {os.waitstatus_to_exitcode(status)})")
        out[label] = (time.perf_counter() - start, usage.ru_maxrss * 1024)
    return out, time.perf_counter() - t0


def _gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/prism_preprocess_bench")
    ap.add_argument("--windows", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--jobs", type=int, default=2, help="steps run at once (the cores of `snakemake --cores`)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resynth", action="store_true", help="write the inputs again even if present")
    ap.add_argument("--chroms", nargs="+", default=GENE_CHROMS, help="a subset, for a quick look")
    opts = ap.parse_args()
    root = Path(opts.workdir)
    if opts.resynth and (root / "inputs.json").exists():
        (root / "inputs.json").unlink()
        (root / "hic.hic").unlink(missing_ok=True)  # hictkpy refuses to overwrite
    # every step runs in a child: Linux carries a parent's peak RSS over fork + exec into the child's
    res, _ = _run_steps([("synth", "synth", {"root": str(root / "inputs"), "seed": opts.seed})], 1)
    inputs = json.loads((root / "inputs" / "inputs.json").read_text())
    print(f"inputs under {root / 'inputs'} ({res['synth'][0]:.1f} s this call, peak RSS {_gb(res['synth'][1])})")
    print("synthesis seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in inputs["synthesis_seconds"].items())
          + f"; bigWig entries {inputs['bigwig_entries']}; .hic pixels {inputs['hic_pixels']:,}")
    sizes = {k: os.path.getsize(inputs[k]) for k in ("fasta", "h3k27ac", "dnase", "hic")}
    print("input sizes: " + ", ".join(f"{k} {_gb(v)}" for k, v in sizes.items()))

    genes_tsv = root / "results" / "genes" / f"{CELL}.tsv"
    genes_tsv.parent.mkdir(parents=True, exist_ok=True)
    res, wall = _run_steps([("genes", "genes", {**inputs, "out": str(genes_tsv)})], 1)
    print(f"\ngene table: {res['genes'][0]:.1f} s, peak RSS {_gb(res['genes'][1])}")

    n_genes = sum(inputs["genes_per_chrom"].get(c, 0) for c in opts.chroms)
    reference = n_genes * REFERENCE_FLOATS * 4
    order = sorted(opts.chroms, key=lambda c: -GRCH38[c])
    for window in opts.windows:
        shard_dir = root / "results" / f"shards_W{window}" / CELL
        shard_dir.mkdir(parents=True, exist_ok=True)
        steps = [(c, "shard", {**inputs, "genes": str(genes_tsv), "chrom": c, "window": window,
                               "out": str(shard_dir / f"{c}.npz")}) for c in order]
        res, wall = _run_steps(steps, opts.jobs)
        total_bytes, raw_bytes, hic_bytes = 0, 0, 0
        print(f"\nshards, window {window} bp, {opts.jobs} at once")
        print(f"{'chrom':>6} {'genes':>6} {'seconds':>8} {'peak RSS':>10} {'shard':>10}")
        for c in opts.chroms:
            size = os.path.getsize(shard_dir / f"{c}.npz")
            total_bytes += size
            with np.load(shard_dir / f"{c}.npz") as z:
                raw_bytes += sum(z[k].nbytes for k in z.files)
                hic_bytes += z["hic"].nbytes
            print(f"{c:>6} {inputs['genes_per_chrom'].get(c, 0):>6} {res[c][0]:>8.1f} {_gb(res[c][1]):>10} "
                  f"{size / 1e6:>8.1f} MB")
        peaks = sorted((r[1] for r in res.values()), reverse=True)
        print(f"total: wall {wall:.1f} s with {opts.jobs} at once (sum over chromosomes "
              f"{sum(r[0] for r in res.values()):.1f} s); peak RSS of one step {_gb(peaks[0])}, "
              f"of {opts.jobs} at once at most {_gb(sum(peaks[: opts.jobs]))}")
        print(f"shards: {total_bytes / 1e6:.1f} MB on disk ({raw_bytes / 1e6:.1f} MB uncompressed; Hi-C part "
              f"{hic_bytes / 1e6:.2f} MB)")
        print(f"the reference's 200,000-float Hi-C vector per TSS: {n_genes:,} x {REFERENCE_FLOATS:,} x 4 B = "
              f"{_gb(reference)}; ratio to our shards {reference / total_bytes:.0f}x on disk, "
              f"{reference / raw_bytes:.0f}x uncompressed, {reference / hic_bytes:.0f}x Hi-C to Hi-C")


if __name__ == "__main__":
    main()
