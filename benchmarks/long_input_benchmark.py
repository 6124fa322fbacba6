"""Inputs of 200,000 bp at hg38 scale: the store (prism.store) vs bigWigs read at load time vs today's
shards at 2,000 bp -- disk, loader throughput on 2 cores, data-side memory, build time (a script, not a test).

    .venv/bin/python benchmarks/long_input_benchmark.py [--workdir /tmp/prism_long_bench]
        [--chroms chr1 chr21 chr22] [--batches 60] [--seed 0] [--resynth]

1. Synthesises, under --workdir (kept and reused unless --resynth), hg38-scale inputs for a subset of
   chromosomes at their real lengths with the helpers of benchmarks/preprocess_benchmark.py: FASTA,
   genes at the real density (18,377 x the subset's share of the 23 gene chromosomes), a gene table,
   H3K27ac and DNase bigWigs on a 10 bp grid with per-step jitter (about ENCODE's fold-change density:
   1-2.5 GB per genome, DATA.md), a 5 kb .hic reaching 500 kb.
2. Builds, one child process per (step, chromosome) (time and peak RSS from os.wait4): the genome store,
   the track store and the long Hi-C (L = 200,000) of one cell line, and today's shards (window 10,000,
   config/config.yaml) for the same genes.
3. Loads training batches (B = 8, random training genes) through a torch DataLoader with 2 workers, as
   prism.train does, each layout in its own child: store (pread), the same files memory-mapped (np.load
   mmap_mode="r"), bigWigs read at load time (pyBigWig in the workers; sequence and Hi-C from the store),
   all at L = 200,000 and with the page cache dropped first (posix_fadvise DONTNEED) then warm (the same
   batches again); the store with a compact batch (sequence codes, float16 signals: what a loader that
   one-hots and casts on the GPU would move); the store with prism.train's validation batch (B = 64);
   today's shards (prism.data.CellData, in memory) and the store at L = 2,000. A batch is what
   CellData.batch returns: one-hot (B, L, 4), signals (B, 3, L) (H3K27ac, DNase, per-base Hi-C).
   Memory: a thread samples /proc/*/smaps_rollup of the loader process and its workers every 0.1 s; PSS
   summed over them counts shared pages once.
4. Prints the figures and their extrapolation to the 23 gene chromosomes of hg38 (3.03 Gb, 18,377 genes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import preprocess_benchmark as pb  # noqa: E402  (the synthetic-input helpers)

CELL = "K562"
LONG = 200_000
SHORT = 2_000
SHARD_WINDOW = 10_000  # config/config.yaml preprocess.window
BATCH = 8  # config/config.yaml training.batch_size
VAL_BATCH = 64  # prism.train: validation batches of max(64, batch_size)
WORKERS = 2
TRACKS = ("h3k27ac", "dnase")
SIGNALS = ["h3k27ac", "dnase", "hic"]
HG38_GENE_BP = sum(pb.GRCH38[c] for c in pb.GENE_CHROMS)
BIGWIG_STEP = 10  # bp per step of the synthetic signal grid
BIGWIG_JITTER = 0.1
HIC_REACH = 100  # bins: 500 kb, more than the 21 bins L = 200,000 needs


# ---------------------------------------------------------------- synthesis


def synthesise(root: Path, chroms: list[str], seed: int) -> dict:
    import pandas as pd

    root.mkdir(parents=True, exist_ok=True)
    done = root / "inputs.json"
    if done.exists():
        return json.loads(done.read_text())
    rng = np.random.default_rng(seed)
    sizes = {c: pb.GRCH38[c] for c in chroms}
    n_genes = round(pb.N_GENES * sum(sizes.values()) / HG38_GENE_BP)
    times = {}
    t = time.perf_counter()
    pb._write_fasta(root / "hg38.fa", rng, sizes)
    times["fasta"] = time.perf_counter() - t
    genes = pb._place_genes(rng, chroms, n_genes)
    inputs = pb._write_tables(root, genes, rng)
    shapes = {"h3k27ac": {"peak_width_steps": 80, "peak_height": 8.0, "background": 0.6},
              "dnase": {"peak_width_steps": 24, "peak_height": 15.0, "background": 0.3}}
    entries = {}
    for mark, kw in shapes.items():
        t = time.perf_counter()
        entries[mark] = pb._write_bigwig(root / f"{mark}.bigWig", genes, rng, sizes=sizes, step=BIGWIG_STEP,
                                         jitter=BIGWIG_JITTER, **kw)
        times[mark] = time.perf_counter() - t
    t = time.perf_counter()
    pixels = pb._write_hic(root / "hic.hic", rng, sizes, reach=HIC_REACH)
    times["hic"] = time.perf_counter() - t
    inputs.update(fasta=str(root / "hg38.fa"), h3k27ac=str(root / "h3k27ac.bigWig"), dnase=str(root / "dnase.bigWig"),
                  hic=str(root / "hic.hic"), sizes=sizes, n_genes=n_genes, synthesis_seconds=times,
                  bigwig_entries=entries, hic_pixels=pixels,
                  genes_per_chrom=pd.Series(genes["chrom"]).value_counts().to_dict())
    done.write_text(json.dumps(inputs, indent=1))
    return inputs


# ---------------------------------------------------------------- the layouts, as CellData would use them


class LongData:
    """One cell line at length L from a fetch(chrom, tss, L) -> prism.store.LongInputs, batched as
    prism.data.CellData.batch does (one-hot, tracks, per-base Hi-C via prism.shards.expand_hic)."""

    def __init__(self, genes_tsv: str, fetch, hic_layout, length: int, compact: bool = False):
        from prism.genes import FEATURES, read_gene_table

        genes = read_gene_table(genes_tsv)
        self.cell, self.length, self.fetch = CELL, length, fetch
        self.gene_id = genes["gene_id"].to_numpy(str)
        self.chrom, self.tss = genes["chrom"].to_numpy(str), genes["tss"].to_numpy(np.int64)
        self.split = genes["split"].to_numpy(str)
        self.target = genes["target"].to_numpy(np.float32)
        self.features = genes[list(FEATURES)].to_numpy(np.float32)
        self.hic_offsets, self.hic_resolution, self.hic_window = hic_layout
        self.compact = compact  # seq as uint8 codes, signals float16: one-hot and float32 left to the device

    def __len__(self):
        return len(self.gene_id)

    def indices(self, split):
        return np.flatnonzero(self.split == split)

    def batch(self, idx):
        import torch

        from prism.data import Batch
        from prism.shards import expand_hic, one_hot

        idx = np.asarray(idx)
        dtype = np.float16 if self.compact else np.float32
        got = self.fetch(self.chrom[idx], self.tss[idx], self.length, dtype)
        hic = expand_hic(got.hic, self.hic_offsets, self.hic_resolution, self.tss[idx], self.hic_window, self.length)
        signals = np.concatenate([got.tracks, hic[:, None].astype(dtype)], axis=1)  # (B, 3, L)
        seq = got.seq if self.compact else one_hot(got.seq)  # (B, L) codes or (B, L, 4)
        return Batch(torch.from_numpy(seq), torch.from_numpy(signals),
                     torch.from_numpy(self.features[idx]), torch.from_numpy(self.target[idx]),
                     torch.from_numpy(idx.astype(np.int64)))


class MmapFetch:
    """The store's files memory-mapped (np.load mmap_mode="r") and sliced: the alternative I/O to pread."""

    def __init__(self, store, genome_paths: dict, track_paths: dict):
        self.store = store  # for Hi-C
        self.genome = {c: np.load(p, mmap_mode="r") for c, p in genome_paths.items()}
        self.tracks = {c: np.load(p, mmap_mode="r") for c, p in track_paths.items()}

    def __call__(self, chrom, tss, length, dtype=np.float32):
        from prism.store import LongInputs

        n = len(tss)
        seq = np.full((n, length), 4, dtype=np.uint8)
        tracks = np.zeros((n, len(TRACKS), length), dtype=np.float32)
        for i, (c, t) in enumerate(zip(chrom, tss)):
            g = self.genome[c]
            s = int(t) - length // 2
            a, b = max(s, 0), min(s + length, len(g))
            seq[i, a - s : b - s] = g[a:b]
            tracks[i, :, a - s : b - s] = self.tracks[c][:, a:b]
        return LongInputs(seq, tracks, self.store.hic_bins(chrom, tss))


class BigWigFetch:
    """Tracks read from the bigWigs at load time (pyBigWig handles opened per worker process through
    prism.preprocess.open_track / track_reader); sequence and Hi-C from the store."""

    def __init__(self, store, bigwigs: dict, sizes: dict):
        self.store, self.bigwigs, self.sizes = store, bigwigs, sizes
        self._pid, self._readers = None, {}

    def _reader(self, name, chrom):
        from prism.preprocess import open_track, track_reader

        if self._pid != os.getpid():
            self._pid, self._handles, self._readers = os.getpid(), {}, {}
        key = (name, chrom)
        if key not in self._readers:
            if name not in self._handles:
                self._handles[name] = open_track(self.bigwigs[name], "bigwig")
            self._readers[key] = track_reader(self._handles[name], self.bigwigs[name], "bigwig", chrom, self.sizes[chrom])
        return self._readers[key]

    def __call__(self, chrom, tss, length, dtype=np.float32):
        from prism.store import LongInputs

        n = len(tss)
        tracks = np.zeros((n, len(TRACKS), length), dtype=np.float32)
        for i, (c, t) in enumerate(zip(chrom, tss)):
            s = int(t) - length // 2
            a, b = max(s, 0), min(s + length, self.sizes[c])
            for j, name in enumerate(TRACKS):
                tracks[i, j, a - s : b - s] = self._reader(name, c)(a, b)
        starts = np.asarray(tss, dtype=np.int64) - length // 2
        return LongInputs(self.store.genome.windows(chrom, starts, length), tracks, self.store.hic_bins(chrom, tss))


class StoreFetch:
    """prism.store.StoreSource.fetch, with float16 tracks rounded the same way as the others."""

    def __init__(self, store):
        self.store = store

    def __call__(self, chrom, tss, length, dtype=np.float32):
        return self.store.fetch(chrom, tss, length, dtype)


# ---------------------------------------------------------------- memory sampling


def _rollup(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem"):
                    out[key] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


class MemorySampler(threading.Thread):
    """Peak over time of PSS (and its anon / file / shmem parts) summed over this process and its
    children, and peak summed RSS."""

    def __init__(self, every: float = 0.1):
        super().__init__(daemon=True)
        import psutil

        self.me, self.every, self.stop = psutil.Process(), every, threading.Event()
        self.peak = {"Pss": 0, "Rss": 0}
        self.at_peak = {}

    def sample(self) -> dict:
        pids = [self.me.pid] + [c.pid for c in self.me.children(recursive=True)]
        total = {}
        for pid in pids:
            for k, v in _rollup(pid).items():
                total[k] = total.get(k, 0) + v
        return total

    def run(self):
        while not self.stop.is_set():
            s = self.sample()
            if s.get("Pss", 0) > self.peak["Pss"]:
                self.peak["Pss"], self.at_peak = s["Pss"], s
            self.peak["Rss"] = max(self.peak["Rss"], s.get("Rss", 0))
            time.sleep(self.every)


def _cpu_seconds() -> tuple[float, float]:
    """(this process, its reaped children): user + system CPU seconds."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _drop_cache(paths) -> None:
    """Evict the files' pages from the page cache (clean pages only: fsync first)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# ---------------------------------------------------------------- one step in a child process


def _store_source(a: dict):
    from prism.store import StoreSource, genome_path, long_hic_path, track_paths

    root, chroms = a["store"], a["chroms"]
    return StoreSource({c: genome_path(root, c) for c in chroms}, {c: track_paths(root, CELL, c)[0] for c in chroms},
                       {c: long_hic_path(root, CELL, c) for c in chroms})


def _load(a: dict) -> dict:
    """Throughput and memory of one layout at one length (see the module docstring)."""
    import torch

    from prism.store import genome_path, track_paths

    torch.set_num_threads(1)
    sampler = MemorySampler()
    base = sampler.sample()["Pss"]  # torch and numpy imported, no data yet
    sampler.start()
    t_setup = time.perf_counter()
    mode, length, chroms = a["mode"], a["length"], a["chroms"]
    files = []
    if mode == "shards":
        from prism.data import CellData

        data = CellData(CELL, a["genes"], [str(Path(a["shards"]) / f"{c}.npz") for c in chroms], SIGNALS, length)
    else:
        store = _store_source(a)
        layout = (store.hic_offsets, store.hic_resolution, store.hic_window)
        genome = {c: str(genome_path(a["store"], c)) for c in chroms}
        tracks = {c: str(track_paths(a["store"], CELL, c)[0]) for c in chroms}
        if mode in ("store", "compact"):
            fetch, files = StoreFetch(store), list(genome.values()) + list(tracks.values())
        elif mode == "mmap":
            fetch, files = MmapFetch(store, genome, tracks), list(genome.values()) + list(tracks.values())
        else:
            fetch = BigWigFetch(store, {t: a[t] for t in TRACKS}, a["sizes"])
            files = list(genome.values()) + [a[t] for t in TRACKS]
        data = LongData(a["genes"], fetch, layout, length, compact=mode == "compact")
    setup = time.perf_counter() - t_setup
    # genes of every split: the split does not change the cost of a batch
    rows = np.random.default_rng(a["seed"]).permutation(len(data))
    B = a["batch"]
    rows = np.resize(rows, a["batches"] * B)  # repeats genes only if there are fewer than the batches ask
    order = rows.reshape(a["batches"], B)
    passes = {}
    for name in (["cold", "warm"] if a["cold"] else ["warm"]):
        if name == "cold":
            _drop_cache(files)
        cpu0 = _cpu_seconds()
        loader = torch.utils.data.DataLoader(list(order), batch_size=None, num_workers=WORKERS, collate_fn=data.batch,
                                             multiprocessing_context="fork")
        t0 = time.perf_counter()
        stamps = []
        for b in loader:
            stamps.append(time.perf_counter())
            del b
        del loader  # joins the workers: their CPU time is counted in RUSAGE_CHILDREN
        cpu = [x1 - x0 for x0, x1 in zip(cpu0, _cpu_seconds())]
        passes[name] = {"startup": stamps[0] - t0, "samples_per_s": (len(stamps) - 1) * B / (stamps[-1] - stamps[0]),
                        "cpu_ms_per_sample": 1e3 * sum(cpu) / (len(stamps) * B),
                        "main_cpu_ms_per_sample": 1e3 * cpu[0] / (len(stamps) * B)}
    # one core, in this process, warm: the per-sample cost without workers
    t0 = time.perf_counter()
    for idx in order[:10]:
        data.batch(idx)
    one_core = len(order[:10]) * B / (time.perf_counter() - t0)
    sampler.stop.set()
    sampler.join()
    b = data.batch(order[0])
    checksum = [float((b.seq < 4).sum() if b.seq.dtype == torch.uint8 else b.seq.sum()), float(b.signals.double().sum())]
    return {"passes": passes, "one_core": one_core, "load": os.getloadavg()[0], "setup": setup, "peak": sampler.peak, "at_peak": sampler.at_peak,
            "base_pss": base, "checksum": checksum, "n_genes": len(data), "batch_mb": (b.seq.nbytes + b.signals.nbytes) / 1e6}


def _child(argv: list[str]) -> None:
    import logging

    step, a = argv[0], json.loads(argv[1])
    if step != "synth":  # (hictkpy logs every block it writes)
        logging.basicConfig(format="  %(message)s")
        logging.getLogger("prism").setLevel(logging.INFO)
    if step == "synth":
        synthesise(Path(a["root"]), a["chroms"], a["seed"])
    elif step == "genes":
        from prism.genes import build_gene_table, write_gene_table

        df = build_gene_table(
            cell=CELL, split_csv=a["split"], halflife_csv=a["halflife"], fold="fold_11",
            expression={"source": "csv_column", "path": a["expression"], "column": pb.EXPR_COLUMN},
            promoter_activity={"source": "abc_genelist", "path": a["genelist"], "member": pb.MEMBER},
            chromosomes=a["chroms"])
        write_gene_table(df, a["out"])
    elif step == "genome":
        from prism.store import build_genome_store

        build_genome_store(a["fasta"], [a["chrom"]], Path(a["store"]) / "genome")
    elif step == "tracks":
        from prism.store import build_track_store

        build_track_store({t: (a[t], "bigwig") for t in TRACKS}, a["chrom"], a["sizes"][a["chrom"]],
                          Path(a["store"]) / CELL / a["chrom"])
    elif step == "hic":
        from prism.store import build_long_hic, long_hic_path

        build_long_hic(a["genes"], a["chrom"], {"path": a["hic"], "normalization": "NONE", "resolution": pb.HIC_RES},
                       LONG, long_hic_path(a["store"], CELL, a["chrom"]), chrom_size=a["sizes"][a["chrom"]])
    elif step == "shard":
        from prism.preprocess import build_shard

        build_shard(genes_tsv=a["genes"], chrom=a["chrom"], fasta=a["fasta"], tracks={t: a[t] for t in TRACKS},
                    hic={"path": a["hic"], "normalization": "NONE", "resolution": pb.HIC_RES},
                    window=SHARD_WINDOW, out=str(Path(a["shards"]) / f"{a['chrom']}.npz"))
    elif step == "load":
        Path(a["out"]).write_text(json.dumps(_load(a)))


def _run(label: str, step: str, args: dict) -> tuple[float, int]:
    """Run one step in a child; (seconds, peak RSS bytes)."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "_child", step, json.dumps(args)], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"step {label} failed (exit {os.waitstatus_to_exitcode(status)})")
    return time.perf_counter() - t0, usage.ru_maxrss * 1024


def _gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/prism_long_bench")
    ap.add_argument("--chroms", nargs="+", default=["chr20", "chr21", "chr22"])
    ap.add_argument("--batches", type=int, default=60, help="batches of 8 per throughput pass at L = 200,000")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resynth", action="store_true")
    opts = ap.parse_args()
    root = Path(opts.workdir)
    inputs_dir = root / "inputs"
    if opts.resynth and (inputs_dir / "inputs.json").exists():
        (inputs_dir / "inputs.json").unlink()
        (inputs_dir / "hic.hic").unlink(missing_ok=True)  # hictkpy refuses to overwrite
    t, rss = _run("synth", "synth", {"root": str(inputs_dir), "chroms": opts.chroms, "seed": opts.seed})
    inp = json.loads((inputs_dir / "inputs.json").read_text())
    if sorted(inp["sizes"]) != sorted(opts.chroms):
        raise SystemExit(f"{inputs_dir} holds {sorted(inp['sizes'])}: pass --resynth for {opts.chroms}")
    chroms, sizes = opts.chroms, inp["sizes"]
    bp = sum(sizes.values())
    scale_bp, scale_genes = HG38_GENE_BP / bp, pb.N_GENES / inp["n_genes"]
    print(f"inputs: {', '.join(chroms)} ({bp / 1e6:.0f} Mb = 1/{scale_bp:.1f} of the 23 gene chromosomes), "
          f"{inp['n_genes']} genes; synthesis {sum(inp['synthesis_seconds'].values()):.0f} s "
          f"({', '.join(f'{k} {v:.0f}' for k, v in inp['synthesis_seconds'].items())})")
    bw_bytes = {t: os.path.getsize(inp[t]) for t in TRACKS}
    print("bigWigs: " + ", ".join(f"{t} {bw_bytes[t] / 1e6:.0f} MB ({bw_bytes[t] / bp:.2f} B/base, "
                                  f"{inp['bigwig_entries'][t] / bp * 1000:.0f} entries/kb; x{scale_bp:.1f} = "
                                  f"{_gb(bw_bytes[t] * scale_bp)} for hg38)" for t in TRACKS))

    genes = root / "results" / "genes" / f"{CELL}.tsv"
    genes.parent.mkdir(parents=True, exist_ok=True)
    store, shards = root / "results" / "store", root / "results" / "shards" / CELL
    common = {**inp, "genes": str(genes), "store": str(store), "shards": str(shards), "chroms": chroms}
    _run("genes", "genes", {**common, "out": str(genes)})

    # ---- builds, one child per (step, chromosome)
    build = {}
    for step in ("genome", "tracks", "hic", "shard"):
        for c in chroms:
            build[step, c] = _run(f"{step} {c}", step, {**common, "chrom": c})
    print(f"\nbuild, one process per step and chromosome (seconds / peak RSS)")
    print(f"{'chrom':>6} {'Mb':>6} {'genes':>6} | {'genome':>14} | {'tracks (T=2)':>14} | {'long Hi-C':>14} | "
          f"{'shard W=10k':>14}")
    for c in chroms:
        cells = " | ".join(f"{build[s, c][0]:>5.1f} s {build[s, c][1] / 1e9:>4.2f} GB"
                           for s in ("genome", "tracks", "hic", "shard"))
        print(f"{c:>6} {sizes[c] / 1e6:>6.1f} {inp['genes_per_chrom'].get(c, 0):>6} | {cells}")
    per_mb = {s: sum(build[s, c][0] for c in chroms) / (bp / 1e6) for s in ("genome", "tracks", "hic", "shard")}
    print("extrapolated to hg38 (23 chromosomes, one process each, 2 at once): " + ", ".join(
        f"{s} {per_mb[s] * HG38_GENE_BP / 1e6 / 60 / 2:.1f} min" for s in ("genome", "tracks", "hic", "shard"))
        + f"; peak RSS is per chromosome (chr1 is the largest)")

    # ---- disk
    from prism.store import genome_path, long_hic_path, track_paths

    g_bytes = sum(os.path.getsize(genome_path(store, c)) for c in chroms)
    t_bytes = sum(os.path.getsize(track_paths(store, CELL, c)[0]) for c in chroms)
    h_bytes = sum(os.path.getsize(long_hic_path(store, CELL, c)) for c in chroms)
    s_bytes = sum(os.path.getsize(shards / f"{c}.npz") for c in chroms)
    print(f"\ndisk, this subset -> hg38 (x{scale_bp:.2f} by bp, x{scale_genes:.2f} by genes)")
    print(f"  genome store (shared by cell lines): {g_bytes / bp:.3f} B/base, {_gb(g_bytes)} -> {_gb(g_bytes * scale_bp)}")
    print(f"  track store (per cell line, T=2): {t_bytes / (bp * len(TRACKS)):.3f} B/base/track, {_gb(t_bytes)} -> "
          f"{_gb(t_bytes * scale_bp)}")
    print(f"  long Hi-C (per cell line, 43 bins/gene): {h_bytes / 1e6:.2f} MB -> {h_bytes * scale_genes / 1e6:.1f} MB")
    print(f"  bigWigs read at load time: 0 B extra (the inputs: {_gb(sum(bw_bytes.values()) * scale_bp)} for hg38)")
    print(f"  today's shards W=10,000 (compressed): {s_bytes / 1e6:.1f} MB -> {_gb(s_bytes * scale_genes)}; shards at "
          f"W=200,000 would hold {pb.N_GENES:,} x 200 kb x (1 + 4 x 2) B = {_gb(pb.N_GENES * LONG * 9)} uncompressed")

    # ---- loading
    # (layout, L, B, cold pass too); B = 64 is prism.train's validation batch (max(64, batch_size))
    cases = [("store", LONG, BATCH, True), ("mmap", LONG, BATCH, True), ("bigwig", LONG, BATCH, True),
             ("compact", LONG, BATCH, False), ("store", LONG, VAL_BATCH, False), ("shards", SHORT, BATCH, False),
             ("store", SHORT, BATCH, False)]
    res = {}
    for mode, length, batch, cold in cases:
        out = root / f"load_{mode}_{length}_{batch}.json"
        batches = (opts.batches if length == LONG else opts.batches * 5) * BATCH // batch
        t, rss = _run(f"load {mode} {length}", "load", {**common, "mode": mode, "length": length, "cold": cold,
                                                         "batch": batch, "batches": batches, "seed": opts.seed,
                                                         "out": str(out)})
        res[mode, length, batch] = json.loads(out.read_text())
        res[mode, length, batch]["wall"], res[mode, length, batch]["max_rss_one"] = t, rss
    ref = res["store", LONG, BATCH]["checksum"]
    for mode in ("mmap", "bigwig", "compact"):
        if not np.allclose(res[mode, LONG, BATCH]["checksum"], ref, rtol=1e-3):
            print(f"WARNING: {mode} batch checksum {res[mode, LONG, BATCH]['checksum']} != store {ref}")
    print(f"\nloading, DataLoader with {WORKERS} workers: samples/s after the first batch, cold / warm "
          f"page cache, and in one process on 1 core (warm); CPU ms per sample of loader + workers (warm), of which "
          f"the main process; 2-core = 2000 / CPU ms, what 2 unshared cores sustain (this machine's load average "
          f"during the runs: {', '.join(format(r['load'], '.1f') for r in res.values())}); memory = PSS of loader + "
          f"workers at its peak, and above an idle process with torch (data side)")
    print(f"{'layout':>8} {'L':>8} {'B':>3} | {'cold':>8} {'warm':>8} {'1 core':>8} | {'CPU ms':>7} {'main':>5} {'2-core':>7} | "
          f"{'peak PSS':>9} {'data side':>9} "
          f"{'anon':>7} {'file':>7} {'shmem':>7} {'1 proc':>7} | {'setup':>6} {'batch':>7}")
    for (mode, length, batch), r in res.items():
        p = r["passes"]
        ap_ = r["at_peak"]
        cold = f"{p['cold']['samples_per_s']:>8.0f}" if "cold" in p else f"{'-':>8}"
        w = p["warm"]
        print(f"{mode:>8} {length:>8,} {batch:>3} | {cold} {w['samples_per_s']:>8.0f} {r['one_core']:>8.0f} | "
              f"{w['cpu_ms_per_sample']:>7.2f} {w['main_cpu_ms_per_sample']:>5.2f} {2000 / w['cpu_ms_per_sample']:>7.0f} | "
              f"{_gb(r['peak']['Pss']):>9} {_gb(r['peak']['Pss'] - r['base_pss']):>9} {_gb(ap_.get('Pss_Anon', 0)):>7} "
              f"{_gb(ap_.get('Pss_File', 0)):>7} {_gb(ap_.get('Pss_Shmem', 0)):>7} {_gb(r['max_rss_one']):>7} | "
              f"{r['setup']:>5.1f}s "
              f"{r['batch_mb']:>5.0f}MB")
    sh = res["shards", SHORT, BATCH]
    print(f"shards at L=2,000 hold every gene in memory: data side {_gb(sh['peak']['Pss'] - sh['base_pss'])} for "
          f"{sh['n_genes']} genes -> ~{_gb((sh['peak']['Pss'] - sh['base_pss']) * scale_genes)} for {pb.N_GENES:,} "
          f"(the store's data side does not grow with genes or chromosomes beyond its ~43 Hi-C floats per gene)")


if __name__ == "__main__":
    main()
