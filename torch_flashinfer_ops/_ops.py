"""Loads the compiled operators (torch.ops.flashinfer.*) and their fakes."""
import torch

from . import _C  # noqa: F401  (registers the schemas and the CPU/GPU kernels)
import meta_kernels  # noqa: F401  (registers one fake per operator)

ops = torch.ops.flashinfer

KV_LAYOUT_CODES = {"NHD": 0, "HND": 1}


def gpu_kernels_built() -> bool:
    """True when this build contains the CUDA/HIP kernels of csrc/hip."""
    return bool(_C.gpu_kernels_built())
