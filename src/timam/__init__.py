"""timam: text-image retrieval with TIMAM (Sarafianos et al., ICCV 2019) as a Kedro project."""

# First, before torch runs anything: oneDNN reads its ISA cap once, at its first primitive.
from timam._onednn_isa import cap_onednn_isa

cap_onednn_isa()

from timam._torchvision_compat import ensure_torchvision_importable  # noqa: E402

ensure_torchvision_importable()

__version__ = "0.1.0"
