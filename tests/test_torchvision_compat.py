"""The guarded torchvision import: transformers and timm import after it, and it is idempotent."""

import importlib
import subprocess
import sys

from timam._torchvision_compat import ensure_torchvision_importable


def test_torchvision_models_and_transforms_work_after_guard():
    ensure_torchvision_importable()
    torchvision = importlib.import_module("torchvision")
    model = torchvision.models.resnet18(weights=None)
    assert model.fc.in_features == 512


def test_guard_is_idempotent():
    ensure_torchvision_importable()
    assert ensure_torchvision_importable() is False


def test_fresh_process_imports_transformers_and_timm_via_package():
    code = "import timam, timm, transformers, torchvision; print(timm.create_model('resnet18').num_features)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "512"


def test_known_import_error_is_repaired_by_importing_timam():
    """Without the guard the first import fails on this stack; importing timam repairs it."""
    code = (
        "import sys\n"
        "try:\n    import torchvision\n    print('native')\n"
        "except RuntimeError as e:\n"
        "    assert 'torchvision::nms does not exist' in str(e), e\n"
        "    import timam, transformers, timm\n"
        "    print('guarded')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"native", "guarded"}
