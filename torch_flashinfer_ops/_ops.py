"""Loads the compiled operators (torch.ops.flashinfer.*) and their fakes."""
import functools

import torch

from . import _C  # noqa: F401  (registers the schemas and the CPU/GPU kernels)
import meta_kernels  # noqa: F401  (registers one fake per operator)

ops = torch.ops.flashinfer

KV_LAYOUT_CODES = {"NHD": 0, "HND": 1}


def gpu_kernels_built() -> bool:
    """True when this build contains the CUDA/HIP kernels of csrc/hip."""
    return bool(_C.gpu_kernels_built())


@functools.lru_cache(maxsize=None)
def gpu_instantiations():
    """(head dims, dtypes) this build's GPU kernels instantiate; empty sets without GPU kernels."""
    text = str(_C.gpu_instantiations())
    if not text:
        return frozenset(), frozenset()
    dims, dtypes = text.split(";")
    return (frozenset(int(d) for d in dims.split(",") if d),
            frozenset(getattr(torch, t) for t in dtypes.split(",") if t))


def prefill_grid_blocks(dtype: torch.dtype, head_dim: int, paged: bool, transform_scores: bool,
                        masked: bool = False) -> int:
    """Blocks of the persistent batch-prefill grid run() launches on the current GPU for this
    configuration (transform_scores: a soft cap; masked: custom masks), for plan()'s work lists
    (0 without GPU kernels or when the configuration is not served)."""
    return int(_C.prefill_grid_blocks(_dtype_name(dtype), int(head_dim), bool(paged),
                                      bool(transform_scores), bool(masked)))


def decode_grid_blocks(q_dtype: torch.dtype, kv_dtype: torch.dtype, head_dim: int, num_qo_heads: int,
                       num_kv_heads: int, use_tensor_cores: bool) -> int:
    """Blocks of the persistent batch-decode grid run() launches on the current GPU for this
    configuration (0 without GPU kernels or when the configuration is not served)."""
    return int(_C.decode_grid_blocks(_dtype_name(q_dtype), _dtype_name(kv_dtype), int(head_dim),
                                     int(num_qo_heads), int(num_kv_heads), bool(use_tensor_cores)))


def decode_wide_tasks(q_dtype: torch.dtype, kv_dtype: torch.dtype, head_dim: int, num_qo_heads: int,
                      num_kv_heads: int, use_tensor_cores: bool) -> int:
    """The most (item, kv head) tasks a batch-decode plan may have for run() to launch the
    tensor-core kernel's wide shape (one block per multiprocessor, twice the K/V bytes in flight)
    on the current GPU; 0 where that shape is never taken (CUDA cores, AMD, no GPU kernels)."""
    return int(_C.decode_wide_tasks(_dtype_name(q_dtype), _dtype_name(kv_dtype), int(head_dim),
                                    int(num_qo_heads), int(num_kv_heads), bool(use_tensor_cores)))


def decode_four_block_grid(q_dtype: torch.dtype, kv_dtype: torch.dtype, head_dim: int, num_qo_heads: int,
                           num_kv_heads: int, use_tensor_cores: bool) -> int:
    """Blocks of the batch-decode grid at four blocks per multiprocessor on the current GPU, which
    run() launches for a plan that asks for more blocks than decode_grid_blocks and at most these:
    the CUDA-core kernel's on 16-bit caches (GQA groups of 2-4 heads), the tensor-core kernel's
    head columns on FP8 caches (groups of at most 8); 0 where there is none (tensor cores on
    16-bit caches, CUDA cores on FP8 caches, other groups, AMD, no GPU kernels)."""
    return int(_C.decode_four_block_grid(_dtype_name(q_dtype), _dtype_name(kv_dtype), int(head_dim),
                                         int(num_qo_heads), int(num_kv_heads), bool(use_tensor_cores)))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")

