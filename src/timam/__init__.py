"""timam: text-image retrieval with TIMAM (Sarafianos et al., ICCV 2019) as a Kedro project."""

from timam._torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()

__version__ = "0.1.0"
