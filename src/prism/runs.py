"""Run identity: what was trained, never which table asked for it.

A run is (cell lines, model settings, seed). Its identity is a path under ``results/runs/`` that
encodes every setting, so it can be parsed back without any lookup table and so that tables that
need the same model share the same run:

    results/runs/K562/L2000_h3k27ac+dnase+hic_K2_l1-1_l2-1/seed2              Prism (architecture "prism")
    results/runs/K562/seq2exp-soft_L200000_h3k27ac+dnase+hic/seed2           another architecture

The architecture (``arch``, a name under ``architectures:`` in config; see prism.archs) prefixes the
id unless it is ``prism``, so Prism's run paths are those of before architectures existed.
Settings are canonicalised first: K = 0 or lambda1 = 0 is "Caduceus w/ signals" (no confounder
encoder), so both become ``K0`` with lambda1 = lambda2 = 0; an architecture without a confounder
encoder has no K at all (``K`` is None and absent from the id).

This module is imported by the Snakefile: keep it free of heavy imports.
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, replace
from functools import cached_property

#: Settings that identify a model variant, with the paper's values (MODEL.md, Table 9).
MODEL_SETTINGS = ("arch", "length", "signals", "K", "lambda1", "lambda2", "retention")
DEFAULT_ARCH = "prism"
PAPER_DEFAULTS = {
    "arch": DEFAULT_ARCH,
    "length": 2000,
    "signals": ("h3k27ac", "dnase", "hic"),
    "K": 2,
    "lambda1": 1.0,
    "lambda2": 1.0,
    "retention": 1.0,
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: architecture names: lower case, so that the upper-case L of the length ends the prefix
ARCH_NAME = re.compile(r"^[a-z][a-z0-9.-]*$")
_MODEL_ID = re.compile(
    r"^(?:(?P<arch>[a-z][a-z0-9.-]*)_)?L(?P<length>\d+)_(?P<signals>nosig|[a-z0-9.]+(?:\+[a-z0-9.]+)*)"
    r"(?:_K(?P<K>\d+)(?:_l1-(?P<lambda1>[0-9.e+-]+)_l2-(?P<lambda2>[0-9.e+-]+))?)?"
    r"(?:_ret(?P<retention>[0-9.]+))?$"
)


class RunError(ValueError):
    """A run setting or run path that cannot be understood."""


def _num(x: float) -> str:
    """Shortest exact spelling of a number for a path: 1.0 -> '1', 0.1 -> '0.1'."""
    return f"{float(x):g}" if float(x) == float(f"{float(x):g}") else repr(float(x))


@dataclass(frozen=True)
class ModelSpec:
    """The settings that make one model variant different from another.

    ``K`` (and the lambdas) are None for an architecture without a confounder encoder.
    """

    length: int = 2000
    signals: tuple[str, ...] = ("h3k27ac", "dnase", "hic")
    K: int | None = 2
    lambda1: float | None = 1.0
    lambda2: float | None = 1.0
    retention: float = 1.0
    arch: str = DEFAULT_ARCH

    def __post_init__(self):
        if not (isinstance(self.arch, str) and ARCH_NAME.match(self.arch)):
            raise RunError(f"arch must be a lower-case name (letters, digits, '.', '-'), got {self.arch!r}")
        if not (isinstance(self.length, int) and not isinstance(self.length, bool) and self.length > 0):
            raise RunError(f"length must be a positive integer, got {self.length!r}")
        if self.K is not None and not (isinstance(self.K, int) and not isinstance(self.K, bool) and 0 <= self.K):
            raise RunError(f"K must be a non-negative integer, got {self.K!r}")
        for name in ("lambda1", "lambda2", "retention"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise RunError(f"{name} must be a number, got {v!r}")
        if not 0.0 < float(self.retention) <= 1.0:
            raise RunError(f"retention must be in (0, 1], got {self.retention!r}")
        for s in self.signals:
            if not re.fullmatch(r"[a-z0-9.]+", s):
                raise RunError(f"signal name {s!r} must be lower-case letters, digits or '.'")
        if len(set(self.signals)) != len(self.signals):
            raise RunError(f"signal listed twice in {list(self.signals)}")
        if self.uses_confounder and not self.signals:
            raise RunError("Prism (K > 0, lambda1 != 0) needs at least one signal for its confounder encoder")

    @property
    def uses_confounder(self) -> bool:
        return self.K is not None and self.K > 0 and float(self.lambda1 or 0.0) != 0.0

    def canonical(self) -> "ModelSpec":
        """Same model, one spelling: no confounder encoder means K0 with both lambdas 0 (K None stays None)."""
        if self.K is None:
            return replace(self, lambda1=None, lambda2=None, retention=float(self.retention))
        if not self.uses_confounder:
            return replace(self, K=0, lambda1=0.0, lambda2=0.0, retention=float(self.retention))
        return replace(self, lambda1=float(self.lambda1), lambda2=float(self.lambda2),
                       retention=float(self.retention))

    @cached_property
    def model_id(self) -> str:
        c = self.canonical()
        sig = "+".join(c.signals) if c.signals else "nosig"
        out = ("" if c.arch == DEFAULT_ARCH else f"{c.arch}_") + f"L{c.length}_{sig}"
        if c.K is not None:
            out += f"_K{c.K}"
        if c.uses_confounder:
            out += f"_l1-{_num(c.lambda1)}_l2-{_num(c.lambda2)}"
        if float(c.retention) < 1.0:
            out += f"_ret{_num(c.retention)}"
        return out

    @classmethod
    @functools.lru_cache(maxsize=None)  # specs are frozen; a workflow's input functions parse each id many times
    def parse(cls, model_id: str) -> "ModelSpec":
        m = _MODEL_ID.match(model_id)
        if not m:
            raise RunError(f"not a model id: {model_id!r} (expected e.g. L2000_h3k27ac+dnase+hic_K2_l1-1_l2-1)")
        g = m.groupdict()
        no_k = g["K"] is None
        spec = cls(
            arch=g["arch"] or DEFAULT_ARCH,
            length=int(g["length"]),
            signals=() if g["signals"] == "nosig" else tuple(g["signals"].split("+")),
            K=None if no_k else int(g["K"]),
            lambda1=None if no_k else float(g["lambda1"] or 0.0),
            lambda2=None if no_k else float(g["lambda2"] or 0.0),
            retention=float(g["retention"] or 1.0),
        )
        if spec.model_id != model_id:
            raise RunError(f"model id {model_id!r} is not canonical; its canonical form is {spec.model_id!r}")
        return spec

    @classmethod
    def from_settings(cls, settings: dict, *, confounder: bool = True, takes_signals: bool = True) -> "ModelSpec":
        """A canonical spec from settings; ``confounder`` / ``takes_signals``: what the architecture's kind
        uses (prism.archs.Kind): K and the lambdas, or the signals, are dropped where they mean nothing."""
        unknown = set(settings) - set(MODEL_SETTINGS)
        if unknown:
            raise RunError(f"unknown model setting(s) {sorted(unknown)}; known: {list(MODEL_SETTINGS)}")
        s = dict(settings)
        if "signals" in s:
            s["signals"] = tuple(s["signals"])
        if not confounder:
            s.update(K=None, lambda1=None, lambda2=None)
        elif "K" in s and s["K"] is None:
            raise RunError("K must be a non-negative integer for an architecture with a confounder encoder")
        if not takes_signals:
            s["signals"] = ()
        return cls(**s).canonical()

    def as_dict(self) -> dict:
        """Plain settings (JSON/YAML-safe) that :meth:`from_settings` turns back into this spec."""
        d = asdict(self.canonical())
        d["signals"] = list(d["signals"])
        return d


@dataclass(frozen=True)
class Run:
    """One training run: the cell lines it trains on (several = mixed-cell training), a model, a seed."""

    cells: tuple[str, ...]
    model: ModelSpec
    seed: int

    def __post_init__(self):
        if not self.cells:
            raise RunError("a run needs at least one cell line")
        for c in self.cells:
            if not _NAME.match(c) or "+" in c:
                raise RunError(f"cell line name {c!r} must be letters, digits, '_', '.', '-' (no '+')")

    @property
    def cells_id(self) -> str:
        return "+".join(self.cells)

    @cached_property
    def path(self) -> str:
        return f"results/runs/{self.cells_id}/{self.model.model_id}/seed{self.seed}"

    @classmethod
    def from_wildcards(cls, cells: str, model: str, seed: str | int) -> "Run":
        return cls(tuple(cells.split("+")), ModelSpec.parse(model), int(seed))

    @classmethod
    def from_path(cls, path: str) -> "Run":
        m = re.search(r"results/runs/([^/]+)/([^/]+)/seed(\d+)", str(path))
        if not m:
            raise RunError(f"not a run path: {path!r}")
        return cls.from_wildcards(*m.groups())
