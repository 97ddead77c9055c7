"""GPU tests on a partial build: a build made with the TFO_HEAD_DIMS / TFO_DTYPES knobs (setup.py)
holds only some head dims and dtypes, and the library refuses the others ("not instantiated").
Such refusals skip the GPU test instead of failing it; on a full build they stay failures."""
import os

import pytest
import torch

_FULL_DIMS = frozenset({64, 128, 256})
_FULL_DTYPES = frozenset({torch.float16, torch.bfloat16})


def _partial_build() -> bool:
    try:
        from torch_flashinfer_ops import _ops
    except ImportError:
        return False
    if not _ops.gpu_kernels_built():
        return False
    dims, dtypes = _ops.gpu_instantiations()
    return dims != _FULL_DIMS or dtypes != _FULL_DTYPES


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Rewrites the call's report (rather than the raised exception), which every pytest and
    # pluggy version supports.
    outcome = yield
    if call.when != "call" or call.excinfo is None or item.get_closest_marker("gpu") is None:
        return
    error = call.excinfo.value
    if "not instantiated" in str(error) and _partial_build():
        report = outcome.get_result()
        report.outcome = "skipped"
        path, line, _ = item.location
        report.longrepr = (path, (line or 0) + 1, f"Skipped: this build does not instantiate it: {error}")


def pytest_configure(config):
    # Under pytest-xdist each worker is a process whose torch thread pool has a thread per core,
    # so n workers ask for n times the cores; the GPU tests' float64 references (CPU) then wait on
    # one another's spinning threads, and a large one ran past 90 s with 8 workers on 16 cores.
    # Each worker takes its share of the cores instead.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
