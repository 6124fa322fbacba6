"""Lightning, imported without torchmetrics' optional domains: ``from prism._lightning import L``.

Lightning imports torchmetrics, and torchmetrics imports, at import time, whichever of its optional packages
are installed: transformers' ``AutoModel`` (for BERTScore; installed here for enformer-pytorch),
``scipy.signal`` (audio), matplotlib (plots) and PIL (images). That is half of a training job's start-up
(Lightning alone: 3.4 s -> 1.8 s on this 2-core machine), and no torchmetrics metric is used by this
package. So while Lightning is imported, the availability checks torchmetrics makes (lightning_utilities'
``RequirementCache`` and ``package_available``) answer "absent" for those packages. The packages themselves
stay importable as usual: the Enformer baseline imports transformers, the figures matplotlib. Should those
internals change, the import just takes its usual time.
"""

from __future__ import annotations

import sys

#: packages torchmetrics need not import for this package (top-level names)
HIDDEN = ("transformers", "scipy", "matplotlib", "PIL")


def _top_level(requirement) -> str:
    """'scipy' of 'scipy>=1.8.0', 'transformers' of 'transformers.models'."""
    name = str(requirement or "").strip()
    for stop in "<>=!~[; ":
        name = name.split(stop)[0]
    return name.split(".")[0]


def _import_lightning():
    hide = {p for p in HIDDEN if p not in sys.modules}  # one already imported costs nothing more
    if "lightning" in sys.modules or not hide:
        import lightning
        return lightning
    try:
        from lightning_utilities.core import imports
        check_original, available_original = imports.RequirementCache._check_available, imports.package_available
    except (ImportError, AttributeError):
        import lightning
        return lightning

    def check_available(self):
        if _top_level(self.requirement or self.module) in hide:
            self.available, self.message = False, f"{self.requirement or self.module}: not imported for Lightning"
        else:
            check_original(self)

    def package_available(name: str) -> bool:
        return False if _top_level(name) in hide else available_original(name)

    imports.RequirementCache._check_available, imports.package_available = check_available, package_available
    try:
        import lightning
        import lightning.pytorch  # noqa: F401
    finally:
        imports.RequirementCache._check_available, imports.package_available = check_original, available_original
    return lightning


L = _import_lightning()
