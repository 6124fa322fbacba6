"""EPInformer on the demo: MACS3 peaks, candidates per gene, parameter counts, CPU seconds per training step.

Writes the demo mirror (or uses one given), the demo gene tables, each cell line's MACS3 DNase peaks
(prism.peaks defaults), candidates from the ABC zips (synthA, synthB) and from the peaks (all three),
then times training steps of EPInformer at the paper's size: building the batch extras
(ElementBatcher with the pyfaidx reader) and forward + backward + AdamW step, separately.

    python benchmarks/epinformer_benchmark.py                    # batch 8, 5 timed steps after 1 warm-up
    python benchmarks/epinformer_benchmark.py --batch 16 --steps 3 --workdir /tmp/epi
    python benchmarks/epinformer_benchmark.py --n-elements 16 --element-length 400   # a demo-sized model
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=None, help="folder for the mirror and outputs (default: a temp folder)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--n-elements", type=int, default=60, help="candidates per gene in the timed model")
    ap.add_argument("--element-length", type=int, default=2000, help="bp per element in the timed model")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from prism.candidates import ElementBatcher, FastaCodes, build_candidates_from_abc, build_candidates_from_peaks, \
        candidate_counts, read_candidates
    from prism.data import Batch
    from prism.demo import write_mirror
    from prism.genes import FEATURES, build_gene_table, read_gene_table, write_gene_table
    from prism.model.epinformer import DEFAULTS, EPInformer, build
    from prism.peaks import CUTOFF, MAX_GAP, MIN_LENGTH, call_dnase_peaks
    from prism.preprocess import gunzip_fasta
    from prism.runs import ModelSpec

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="epinformer_bench_"))
    mirror = write_mirror(work / "mirror", seed=0)
    fasta = gunzip_fasta(mirror["genome"], work / "hg38.ml.fa")

    def stats(counts):
        return f"median {float(np.median(counts)):g}, min {int(counts.min())}, max {int(counts.max())}"

    print(f"MACS3 bdgpeakcall settings: cutoff {CUTOFF}, min length {MIN_LENGTH}, max gap {MAX_GAP}")
    tables = {}
    for cell, entry in mirror["cells"].items():
        if entry["expression_column"]:
            expression = {"source": "csv_column", "path": mirror["expression_csv"], "column": entry["expression_column"]}
            promoter = {"source": "abc_genelist", "path": entry["genelist"]}
        else:
            expression = {"source": "bigwig_sum", "path": entry["cage_bigwig"], "flank": 192}
            promoter = {"source": "bigwig", "h3k27ac": entry["h3k27ac"]["path"], "dnase": entry["dnase"]["path"]}
        genes = build_gene_table(cell=cell, split_csv=mirror["split_csv"], halflife_csv=mirror["halflife_csv"],
                                 expression=expression, promoter_activity=promoter,
                                 genome_fai_or_sizes=mirror["chromosomes"])
        write_gene_table(genes, work / f"{cell}.genes.tsv")
        peaks = call_dnase_peaks(entry["dnase"]["path"], work / "peaks" / cell / "dnase.macs3.narrowPeak")
        print(f"{cell}: {peaks['n_peaks']} peaks ({peaks['per_chrom']}), {peaks['seconds']:.1f} s")
        res = build_candidates_from_peaks(peaks["path"], work / f"{cell}.genes.tsv", work / f"{cell}.peaks.tsv",
                                          h3k27ac=entry["h3k27ac"]["path"], dnase=entry["dnase"]["path"],
                                          hic={"path": entry["hic"]["path"], "normalization": "NONE", "resolution": 5000})
        counts = candidate_counts(read_candidates(res["path"])).to_numpy()
        print(f"{cell}: candidates per gene from peaks: {stats(counts)}")
        if entry["abc_zip"]:
            res = build_candidates_from_abc(entry["abc_zip"], work / f"{cell}.genes.tsv", work / f"{cell}.abc.tsv")
            table = read_candidates(res["path"])
            counts = candidate_counts(table)
            print(f"{cell}: candidates per gene from ABC: {stats(counts.to_numpy())}; "
                  f"genes with any (ABC-expressed): {stats(counts[counts > 0].to_numpy())}, {int((counts > 0).sum())} genes")
            tables[cell] = table

    for n_extra, name in ((1, "EPInformer-PE"), (2, "EPInformer-PE-Activity"), (3, "EPInformer-PE-Activity-HiC")):
        model = build({**DEFAULTS, "n_extra_features": n_extra}, ModelSpec(), 9)
        print(f"{name}: {sum(p.numel() for p in model.parameters() if p.requires_grad):,} trainable parameters")

    cell = "synthA"
    genes = read_gene_table(work / f"{cell}.genes.tsv")
    batcher = ElementBatcher(tables[cell], genes, FastaCodes(fasta), n_elements=args.n_elements,
                             element_length=args.element_length)
    torch.manual_seed(0)
    model = EPInformer(n_elements=args.n_elements, element_length=args.element_length)
    opt = torch.optim.AdamW(model.param_groups(1e-6), lr=5e-4, betas=(0.9, 0.95))
    rng = np.random.default_rng(0)
    train = genes.index[genes["split"] == "train"].to_numpy()
    feats = torch.from_numpy(genes[FEATURES].to_numpy(np.float32))
    target = torch.from_numpy(genes["target"].to_numpy(np.float32))
    t_batch, t_step = [], []
    for step in range(args.steps + 1):
        rows = rng.choice(train, args.batch, replace=False)
        t0 = time.process_time()
        extra = batcher.extras(genes["gene_id"].to_numpy()[rows])
        t1 = time.process_time()
        b = Batch(seq=torch.zeros(args.batch, args.element_length, 4), signals=torch.zeros(args.batch, 0, args.element_length),
                  features=feats[rows], target=target[rows], index=torch.from_numpy(rows), extra=extra)
        model.train()
        loss = model.loss(model.forward_batch(b, mode="train"), b.target)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t2 = time.process_time()
        if step:  # the first step warms up
            t_batch.append(t1 - t0)
            t_step.append(t2 - t1)
    print(f"CPU seconds per step, {1 + args.n_elements} elements x {args.element_length} bp, batch {args.batch}, "
          f"{torch.get_num_threads()} torch threads "
          f"(median of {args.steps}): batch extras {statistics.median(t_batch):.3f}, "
          f"forward + backward + AdamW {statistics.median(t_step):.2f}")
    print(f"outputs in {work}")


if __name__ == "__main__":
    main()
