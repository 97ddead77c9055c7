"""GPU tier: argument errors raised inside the GPU bindings (and the CPU kernels beside them)
reach Python as RuntimeError with their message. Each case runs in a child process, so that a
crash (a broken error path) fails its own case instead of the test session."""

import subprocess
import sys

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA/HIP GPU"),
]

_PRELUDE = "import torch, torch_flashinfer_ops\nops = torch.ops.flashinfer\n"

# name: (code with {dev}, expected text, devices)
CASES = {
    # Integers and shapes formatted into the message: the path that breaks when the extension
    # carries its own copy of the C++ standard library.
    "merge_state_shape": (
        "v = torch.randn(8, 4, 64, dtype=torch.float16, device='{dev}')\n"
        "s = torch.randn(8, 3, device='{dev}')\n"
        "ops.merge_state(v, s, v, s)",
        "must be [seq_len, num_heads] = [8, 4]",
        ("cuda", "cpu"),
    ),
    "single_prefill_head_dim": (
        "q = torch.randn(16, 4, 96, dtype=torch.float16, device='{dev}')\n"
        "ops.single_prefill(q, q, q, torch.empty_like(q), None, None, 0, False, -1, 0.1, 0.0, 1.0, 1.0)",
        "head_dim 96",
        ("cuda",),  # the CPU kernels serve any head_dim
    ),
    "single_prefill_fp8_kv": (
        "q = torch.randn(16, 4, 128, dtype=torch.float16, device='{dev}')\n"
        "k = torch.randn(16, 4, 128, device='{dev}').to(torch.float8_e4m3fn)\n"
        "ops.single_prefill(q, k, k, torch.empty_like(q), None, None, 0, False, -1, 0.1, 0.0, 1.0, 1.0)",
        "float8",
        ("cuda",),  # the CPU kernels serve float8 KV
    ),
    "single_decode_heads": (
        "q = torch.randn(6, 128, dtype=torch.float16, device='{dev}')\n"
        "k = torch.randn(32, 4, 128, dtype=torch.float16, device='{dev}')\n"
        "ops.single_decode(q, k, k, torch.empty_like(q), None, 0, -1, 0.1, 0.0, 1.0, 1.0, False)",
        "multiple of num_kv_heads",
        ("cuda", "cpu"),
    ),
    # A view whose rows start 8 bytes apart from a 16-byte boundary: the matrix-core family
    # copies FP8 rows in 16-byte chunks and must refuse it rather than read misaligned.
    "single_decode_fp8_mma_unaligned": (
        "q = torch.randn(8, 128, dtype=torch.float16, device='{dev}')\n"
        "k = torch.zeros(64, 2, 136, device='{dev}').to(torch.float8_e4m3fn)[..., 8:]\n"
        "ops.single_decode(q, k, k, torch.empty_like(q), None, 0, -1, 0.1, 0.0, 1.0, 1.0, True)",
        "multiples of 16 elements",
        ("cuda",),  # the CPU kernels read any stride
    ),
    # A float workspace view that starts 4 bytes past a 16-byte boundary: the decode kernels
    # write and merge partial rows 16 bytes at a time, so the binding refuses it.
    "batch_decode_partial_o_unaligned": (
        "q = torch.randn(1, 4, 128, dtype=torch.float16, device='{dev}')\n"
        "kc = torch.randn(2, 16, 1, 128, dtype=torch.float16, device='{dev}')\n"
        "i32 = lambda *v: torch.tensor(v, dtype=torch.int32, device='{dev}')\n"
        "partial_o = torch.zeros(1025, device='{dev}')[1:]\n"
        "ops.batch_decode_paged_run(q, kc, kc, i32(0, 1), i32(0), i32(16), torch.zeros(64, dtype=torch.int32, device='{dev}'), "
        "partial_o, torch.zeros(16, device='{dev}'), torch.zeros(8, dtype=torch.int32, device='{dev}'), torch.empty_like(q), "
        "None, 0, -1, 0.1, 0.0, 1.0, 1.0, False, 0, False)",
        "partial_o must be 16-byte aligned",
        ("cuda",),  # the CPU kernels read any alignment
    ),
    # A schedule buffer shorter than its header and one item: the decode kernels read a block's
    # first item before they know the item count, so the binding refuses it.
    "batch_decode_plan_info_too_short": (
        "q = torch.randn(1, 4, 128, dtype=torch.float16, device='{dev}')\n"
        "kc = torch.randn(2, 16, 1, 128, dtype=torch.float16, device='{dev}')\n"
        "i32 = lambda *v: torch.tensor(v, dtype=torch.int32, device='{dev}')\n"
        "ops.batch_decode_paged_run(q, kc, kc, i32(0, 1), i32(0), i32(16), torch.zeros(12, dtype=torch.int32, device='{dev}'), "
        "torch.zeros(1024, device='{dev}'), torch.zeros(16, device='{dev}'), torch.zeros(8, dtype=torch.int32, device='{dev}'), "
        "torch.empty_like(q), None, 0, -1, 0.1, 0.0, 1.0, 1.0, True, 0, False)",
        "plan_info must hold at least 16 int32",
        ("cuda",),  # the CPU kernels check the plan against its batch
    ),
}


@pytest.mark.parametrize(
    "case, device", [(name, dev) for name in sorted(CASES) for dev in CASES[name][2]]
)
def test_error_raises(case, device):
    body, expected, _ = CASES[case]
    code = _PRELUDE + "try:\n" + "".join(
        "    " + line + "\n" for line in body.format(dev=device).splitlines()
    ) + "except RuntimeError as error:\n    print('raised:', error)\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "raised:" in proc.stdout and expected in proc.stdout, (
        f"exit {proc.returncode}: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    )
