"""Job logging for the workflow's script adapters: everything a step prints goes to its rule's log."""

from __future__ import annotations

import contextlib
import sys
import time


@contextlib.contextmanager
def job_log(snakemake):
    """Send stdout/stderr of a Snakemake ``script:`` step to ``log[0]``; yield a timestamped ``log``."""
    path = snakemake.log[0]
    with open(path, "a", buffering=1) as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        t0 = time.monotonic()

        def log(msg: str):
            print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}", flush=True)

        log(f"rule {snakemake.rule}: {', '.join(map(str, snakemake.output))}")
        try:
            yield log
        except Exception as e:
            log(f"ERROR: {type(e).__name__}: {e}")
            raise
        log(f"done in {time.monotonic() - t0:.1f} s")
