"""Lightning, imported without torchmetrics' BERTScore model classes: ``from prism._lightning import L``.

Lightning imports torchmetrics, and torchmetrics imports transformers' ``AutoModel`` at import time (for its
BERTScore metric) whenever transformers is installed, as it is here for enformer-pytorch: seconds of CPU in
every training job. No torchmetrics metric is used by this package, so while Lightning is imported the
requirement checks for transformers that torchmetrics makes (lightning_utilities' ``RequirementCache``)
answer "absent". transformers itself stays importable: the Enformer baseline imports it as usual. Should
those internals change, the import just takes its usual time.
"""

from __future__ import annotations

import sys


def _import_lightning():
    if "lightning" in sys.modules or "transformers" in sys.modules:
        import lightning
        return lightning
    try:
        from lightning_utilities.core.imports import RequirementCache
        original = RequirementCache._check_available
    except (ImportError, AttributeError):
        import lightning
        return lightning

    def check_available(self):
        if str(self.requirement or self.module or "").startswith("transformers"):
            self.available, self.message = False, "transformers: not imported for Lightning (BERTScore unused)"
        else:
            original(self)

    RequirementCache._check_available = check_available
    try:
        import lightning
        import lightning.pytorch  # noqa: F401
    finally:
        RequirementCache._check_available = original
    return lightning


L = _import_lightning()
