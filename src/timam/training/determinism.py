"""The kernel settings a training run holds while it runs (``training.deterministic``).

Seeds alone do not make GPU runs repeat: cuDNN picks convolution algorithms by timing them
(``cudnn.benchmark``) and several CUDA kernels (atomic adds, some cuBLAS reductions) sum in an order
that changes from run to run. ``deterministic: true`` asks for the deterministic kernels:
``cudnn.deterministic``, ``torch.use_deterministic_algorithms(True)`` (an operation with no
deterministic kernel then raises an error naming it), ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (cuBLAS
needs it for repeatable results; it takes effect for cuBLAS handles created after it is set, so a
process that used CUDA before training should set it in its environment) and benchmark off.
Otherwise training images have one fixed size, so ``cudnn.benchmark`` is on: each convolution's
fastest algorithm is timed once and reused. On the CPU these flags change nothing the run
computes. The caller's settings are restored when the run ends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"
# The two workspace settings cuBLAS documents as deterministic; another value is replaced.
DETERMINISTIC_WORKSPACES = (":4096:8", ":16:8")


@contextlib.contextmanager
def kernel_settings(deterministic: bool) -> Iterator[None]:
    """Deterministic kernels (and no cuDNN benchmarking) with ``deterministic``, cuDNN benchmarking
    of the fixed-size training convolutions otherwise; every setting put back afterwards."""
    cudnn = torch.backends.cudnn
    saved = (
        cudnn.deterministic,
        cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        os.environ.get(CUBLAS_WORKSPACE),
    )
    try:
        cudnn.benchmark = not deterministic
        if deterministic:
            if os.environ.get(CUBLAS_WORKSPACE) not in DETERMINISTIC_WORKSPACES:
                os.environ[CUBLAS_WORKSPACE] = DETERMINISTIC_WORKSPACES[0]
            cudnn.deterministic = True
            torch.use_deterministic_algorithms(True)
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark, algorithms, warn_only, workspace = saved
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        if workspace is None:
            os.environ.pop(CUBLAS_WORKSPACE, None)
        else:
            os.environ[CUBLAS_WORKSPACE] = workspace
