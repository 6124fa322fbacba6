"""Run identity: what was trained, never which table asked for it.

A run is (cell lines, model settings, seed). Its identity is a path under ``results/runs/`` that
encodes every setting, so it can be parsed back without any lookup table and so that tables that
need the same model share the same run:

    results/runs/K562/L2000_h3k27ac+dnase+hic_K2_l1-1_l2-1/seed2

Settings are canonicalised first: K = 0 or lambda1 = 0 is "Caduceus w/ signals" (no confounder
encoder), so both become ``K0`` with lambda1 = lambda2 = 0.

This module is imported by the Snakefile: keep it free of heavy imports.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

#: Settings that identify a model variant, with the paper's values (MODEL.md, Table 9).
MODEL_SETTINGS = ("length", "signals", "K", "lambda1", "lambda2", "retention")
PAPER_DEFAULTS = {
    "length": 2000,
    "signals": ("h3k27ac", "dnase", "hic"),
    "K": 2,
    "lambda1": 1.0,
    "lambda2": 1.0,
    "retention": 1.0,
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MODEL_ID = re.compile(
    r"^L(?P<length>\d+)_(?P<signals>nosig|[a-z0-9.]+(?:\+[a-z0-9.]+)*)_K(?P<K>\d+)"
    r"(?:_l1-(?P<lambda1>[0-9.e+-]+)_l2-(?P<lambda2>[0-9.e+-]+))?"
    r"(?:_ret(?P<retention>[0-9.]+))?$"
)


class RunError(ValueError):
    """A run setting or run path that cannot be understood."""


def _num(x: float) -> str:
    """Shortest exact spelling of a number for a path: 1.0 -> '1', 0.1 -> '0.1'."""
    return f"{float(x):g}" if float(x) == float(f"{float(x):g}") else repr(float(x))


@dataclass(frozen=True)
class ModelSpec:
    """The settings that make one model variant different from another."""

    length: int = 2000
    signals: tuple[str, ...] = ("h3k27ac", "dnase", "hic")
    K: int = 2
    lambda1: float = 1.0
    lambda2: float = 1.0
    retention: float = 1.0

    def __post_init__(self):
        if not (isinstance(self.length, int) and self.length > 0):
            raise RunError(f"length must be a positive integer, got {self.length!r}")
        if not (isinstance(self.K, int) and 0 <= self.K):
            raise RunError(f"K must be a non-negative integer, got {self.K!r}")
        if not 0.0 < float(self.retention) <= 1.0:
            raise RunError(f"retention must be in (0, 1], got {self.retention!r}")
        for s in self.signals:
            if not re.fullmatch(r"[a-z0-9.]+", s):
                raise RunError(f"signal name {s!r} must be lower-case letters, digits or '.'")
        if len(set(self.signals)) != len(self.signals):
            raise RunError(f"signal listed twice in {list(self.signals)}")
        if self.K > 0 and float(self.lambda1) != 0.0 and not self.signals:
            raise RunError("Prism (K > 0, lambda1 != 0) needs at least one signal for its confounder encoder")

    @property
    def uses_confounder(self) -> bool:
        return self.K > 0 and float(self.lambda1) != 0.0

    def canonical(self) -> "ModelSpec":
        """Same model, one spelling: no confounder encoder means K0 with both lambdas 0."""
        if not self.uses_confounder:
            return replace(self, K=0, lambda1=0.0, lambda2=0.0)
        return replace(self, lambda1=float(self.lambda1), lambda2=float(self.lambda2))

    @property
    def model_id(self) -> str:
        c = self.canonical()
        sig = "+".join(c.signals) if c.signals else "nosig"
        out = f"L{c.length}_{sig}_K{c.K}"
        if c.uses_confounder:
            out += f"_l1-{_num(c.lambda1)}_l2-{_num(c.lambda2)}"
        if float(c.retention) < 1.0:
            out += f"_ret{_num(c.retention)}"
        return out

    @classmethod
    def parse(cls, model_id: str) -> "ModelSpec":
        m = _MODEL_ID.match(model_id)
        if not m:
            raise RunError(f"not a model id: {model_id!r} (expected e.g. L2000_h3k27ac+dnase+hic_K2_l1-1_l2-1)")
        g = m.groupdict()
        spec = cls(
            length=int(g["length"]),
            signals=() if g["signals"] == "nosig" else tuple(g["signals"].split("+")),
            K=int(g["K"]),
            lambda1=float(g["lambda1"] or 0.0),
            lambda2=float(g["lambda2"] or 0.0),
            retention=float(g["retention"] or 1.0),
        )
        if spec.model_id != model_id:
            raise RunError(f"model id {model_id!r} is not canonical; its canonical form is {spec.model_id!r}")
        return spec

    @classmethod
    def from_settings(cls, settings: dict) -> "ModelSpec":
        unknown = set(settings) - set(MODEL_SETTINGS)
        if unknown:
            raise RunError(f"unknown model setting(s) {sorted(unknown)}; known: {list(MODEL_SETTINGS)}")
        s = dict(settings)
        if "signals" in s:
            s["signals"] = tuple(s["signals"])
        return cls(**s).canonical()

    def as_dict(self) -> dict:
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

    @property
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
