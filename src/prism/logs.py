"""Job logging for the workflow's script adapters: everything a step prints goes to its rule's log."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time


@contextlib.contextmanager
def job_log(snakemake):
    """Send stdout/stderr of a Snakemake ``script:`` step to ``log[0]``; yield a timestamped ``log``.

    Redirection is at the file-descriptor level, so library loggers and C extensions land there too.
    A failure is written as one ``ERROR:`` line naming the exception. Bad input (a DataError or an
    AssetError, whose message is one line naming the file) then ends the job with that one line on
    Snakemake's console and exit status 1; anything else is re-raised with its traceback (a bug).

    The objects alive at entry (the imports: torch, Lightning, pandas) and, at exit, the job's own are
    moved out of the garbage collector's reach (``gc.freeze``): the collector no longer walks them at
    each full collection, nor once more at interpreter exit (1.3 s of every training job's end on a
    2-core machine, 0.2 s frozen). Reference counting still frees them; only a cycle among them would
    wait for the job's process to end.
    """
    gc.freeze()
    path = snakemake.log[0]
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    t0 = time.monotonic()

    def log(msg: str):
        print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}", flush=True)

    failure = None
    try:
        log(f"rule {snakemake.rule}: {', '.join(map(str, snakemake.output))}")
        yield log
        log(f"done in {time.monotonic() - t0:.1f} s")
        gc.freeze()
    except Exception as e:
        log(f"ERROR: {type(e).__name__}: {e}")
        if not _is_bad_input(e):
            raise
        failure = f"{type(e).__name__}: {e}"
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)
    if failure:
        raise SystemExit(failure)  # Python prints the line to stderr, no traceback, and exits with status 1


#: errors whose one-line message is all a user needs (by name: this module imports neither)
BAD_INPUT = ("prism.genes.DataError", "prism.download.AssetError")


def _is_bad_input(e: BaseException) -> bool:
    return any(f"{c.__module__}.{c.__qualname__}" in BAD_INPUT for c in type(e).__mro__)
