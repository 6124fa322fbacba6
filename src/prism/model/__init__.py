"""Model code: selective scan, Mamba mixer, Caduceus backbone and the Prism model."""

from prism.model.caduceus import BiMambaMixer, Block, CaduceusBackbone, RMSNorm
from prism.model.mamba import Mamba
from prism.model.prism import ConfounderEncoder, ModelConfig, PrismModel, count_parameters, uniform_loss
from prism.model.scan import selective_scan, selective_scan_reference

__all__ = [
    "BiMambaMixer",
    "Block",
    "CaduceusBackbone",
    "ConfounderEncoder",
    "Mamba",
    "ModelConfig",
    "PrismModel",
    "RMSNorm",
    "count_parameters",
    "selective_scan",
    "selective_scan_reference",
    "uniform_loss",
]
