"""Make ``import torchvision`` work beside the CPU torch wheel used on our machines.

torchvision 0.28 from PyPI is built against a CUDA torch; next to the local CPU wheel its compiled
ops fail to register and ``import torchvision`` raises ``RuntimeError: operator torchvision::nms
does not exist``. transformers and timm import torchvision, so they fail too. Defining the two
operator schemas the Python side expects lets the import finish; models and transforms work, and
only ``torchvision.ops``/``torchvision.io`` stay unusable (we decode images with Pillow).

This must run before anything imports transformers or timm: ``timam/__init__.py`` and
``tests/conftest.py`` call it.
"""

from __future__ import annotations

import sys

import torch

_MISSING_OPERATOR = "operator torchvision::nms does not exist"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library: torch.library.Library | None = None


def _drop_half_imported_modules() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def ensure_torchvision_importable() -> bool:
    """Import torchvision, defining its missing operator schemas on exactly the known error.

    Returns True when the workaround was needed. Any other import error is re-raised unchanged.
    """
    global _library
    try:
        import torchvision  # noqa: F401
    except RuntimeError as error:
        if _MISSING_OPERATOR not in str(error):
            raise
    else:
        return False
    _drop_half_imported_modules()
    if _library is None:
        _library = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            _library.define(schema)
    import torchvision  # noqa: F401,F811

    return True
