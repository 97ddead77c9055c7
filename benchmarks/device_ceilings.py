"""What the device itself reaches, measured once per run, as the yardsticks of the benchmarks.

    copy_bandwidth   bytes/s of a large device-to-device copy, read + write bytes counted
    gemm_tflops      TFLOP/s of torch.matmul on two n x n matrices (2 n^3 FLOPs)
"""
import torch

from cuda_timing import timed, timed_batch


def copy_bandwidth(nbytes=2 << 30, iters=10):
    """Bytes per second of dst.copy_(src) over `nbytes` (default 2 GiB), counting the bytes
    read plus the bytes written."""
    src = torch.randn(nbytes // 2, dtype=torch.float16, device="cuda")
    dst = torch.empty_like(src)
    return 2 * nbytes / timed(lambda: dst.copy_(src), iters)


def gemm_tflops(dtype, n=8192, calls=10, iters=10):
    """TFLOP/s of torch.matmul of two n x n matrices of `dtype`."""
    a = torch.randn(n, n, dtype=dtype, device="cuda")
    b = torch.randn(n, n, dtype=dtype, device="cuda")
    out = torch.empty(n, n, dtype=dtype, device="cuda")
    seconds = timed_batch(lambda: torch.matmul(a, b, out=out), calls, iters)
    return 2.0 * n ** 3 / seconds * 1e-12
