"""The model registry: every architecture the workflow trains, evaluates and counts is one entry here.

Two levels:

- a **kind** is code: one module under ``prism.model`` with ``build(hp, spec, n_features)`` and the
  methods of the model contract (``forward_batch``, ``loss``, ``param_groups``; see prism.model.prism).
  :data:`KINDS` says what each kind takes from a run's settings and which extra inputs its data need.
- an **architecture** is config: ``architectures.<name>: {kind, model: {hyper-parameters}, training:
  {overrides}}``. Its name is part of a run's identity (prism.runs), so one table can hold several.

Adding a model is one module plus one :data:`KINDS` entry (and an ``architectures`` entry in config).
A kind whose authors released checkpoints names its reader in ``importer``; an architecture with
``released: <weights>`` then has its runs imported from them (prism.released.import_run), not trained.
This module is imported by the Snakefile: it imports nothing heavy; builders are imported on use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

__all__ = ["Kind", "KINDS", "kind", "build_model", "importer", "VARIANT_KINDS"]

#: test-time variants (prism.evaluate): "full", "drop-<signal>", "weighted", "length-<bp>"
VARIANT_KINDS = ("full", "drop", "weighted", "length")


@dataclass(frozen=True)
class Kind:
    """What the workflow needs to know about one kind of model without importing it."""

    name: str
    builder: str  # "module:function", imported only when a model is built
    #: K, lambda1 and lambda2 mean something (Prism's confounder encoder); else they are dropped
    confounder: bool = False
    #: the run's signals are input channels; if False a run's signals are always ()
    takes_signals: bool = True
    #: extra inputs beyond the TSS window, by name (prism.data builds them into Batch.extra)
    inputs: tuple[str, ...] = ()
    #: test-time variants that make sense for this kind
    variants: tuple[str, ...] = ("full", "drop", "length")
    #: hyper-parameters every architecture of this kind must give (checked by the plan)
    required_hp: tuple[str, ...] = ()
    #: the kind's hyper-parameters include ``pretrained`` (a directory of weights the model starts from)
    pretrained: bool = False
    #: "module:function" reading its authors' released Lightning checkpoints (architectures.<name>.released):
    #: (prism.released.ReferenceCheckpoint, name=, log=) -> prism.released.ImportedCheckpoint; None: none exist
    importer: str | None = None

    def inputs_for(self, hp: dict) -> tuple[str, ...]:
        """Extra inputs of one architecture: Seq2Exp's MACS3 variant reads a fixed mask of MACS3 DNase peaks
        instead of learning one (and, as the reference, neither forces the centre nor masks the blacklist)."""
        if hp.get("mask") == "macs3":
            return tuple(i for i in self.inputs if i != "blacklist") + ("peaks",)
        return self.inputs


_BACKBONE_HP = ("d_model", "n_layer", "d_state", "d_conv", "expand", "center_len")

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("prism", "prism.model.prism:build", confounder=True, variants=VARIANT_KINDS,
             required_hp=_BACKBONE_HP + ("confounder_width",), pretrained=True,
             importer="prism.released:import_prism_checkpoint"),
        Kind("seq2exp", "prism.model.seq2exp:build", inputs=("blacklist",), required_hp=_BACKBONE_HP,
             importer="prism.model.seq2exp:import_reference_checkpoint"),
        Kind("enformer", "prism.model.enformer:build", takes_signals=False, variants=("full", "length"),
             pretrained=True),
        Kind("hyenadna", "prism.model.hyena:build", takes_signals=False, variants=("full", "length")),
        Kind("epinformer", "prism.model.epinformer:build", inputs=("elements",),
             variants=("full",)),
    )
}


def kind(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r} (known: {', '.join(KINDS)})") from None


def _function(ref: str):
    module, _, func = ref.partition(":")
    return getattr(importlib.import_module(module), func)


def build_model(arch: dict, spec, n_features: int):
    """The torch module of one run: ``arch`` is {kind, model: hp, ...}, spec a prism.runs.ModelSpec."""
    return _function(kind(arch["kind"]).builder)(dict(arch["model"]), spec, n_features)


def importer(name: str):
    """The function that reads kind ``name``'s released checkpoints (Kind.importer); ValueError if it has none."""
    ref = kind(name).importer
    if ref is None:
        have = ", ".join(k.name for k in KINDS.values() if k.importer)
        raise ValueError(f"kind {name!r} has no importer of released checkpoints (kinds with one: {have})")
    return _function(ref)
