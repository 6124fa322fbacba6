"""Prism: gene expression from a TSS-centred DNA window plus epigenomic signals.

Subpackages are imported lazily: the workflow's Snakefile imports only the light modules
(:mod:`prism.runs`, :mod:`prism.config`), never torch.
"""

__version__ = "0.1.0"
