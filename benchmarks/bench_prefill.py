"""Single-request prefill on the GPU: torch_flashinfer_ops (fa2) vs torch SDPA (flash, cuDNN) and,
when importable, upstream FlashInfer's fa2 backend.

    python benchmarks/bench_prefill.py [--lengths 1024,4096,16384] [--markdown out.md]

Shapes: 32 query heads, 8 kv heads, head_dim 128, qo_len = kv_len = L, fp16 and bf16, causal and
not. TFLOP/s from 4 * L * L * D * Hq FLOPs, halved for causal. Times are medians of CUDA-event
timed runs after warm-up, on random (never zero) inputs.
"""
import argparse
import datetime
import subprocess

import torch
import torch.nn.functional as F

import torch_flashinfer_ops as tfo
from cuda_timing import timed

HQ, HKV, D = 32, 8, 128


def sdpa_runner(backend, q, k, v, causal):
    qt, kt, vt = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
    kt = kt.repeat_interleave(HQ // HKV, dim=1).contiguous()
    vt = vt.repeat_interleave(HQ // HKV, dim=1).contiguous()
    qt = qt.contiguous()

    def run():
        with torch.nn.attention.sdpa_kernel(backend):
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)

    return run


def upstream_runner(q, k, v, causal):
    import flashinfer  # upstream

    def run():
        return flashinfer.single_prefill_with_kv_cache(q, k, v, causal=causal, backend="fa2")

    return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", default="1024,4096,16384")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    peers = {
        "sdpa-flash": lambda q, k, v, c: sdpa_runner(torch.nn.attention.SDPBackend.FLASH_ATTENTION, q, k, v, c),
        "sdpa-cudnn": lambda q, k, v, c: sdpa_runner(torch.nn.attention.SDPBackend.CUDNN_ATTENTION, q, k, v, c),
    }
    try:
        import flashinfer  # noqa: F401

        peers["flashinfer-fa2"] = upstream_runner
    except Exception as error:  # not installed: reported, not fatal
        print(f"upstream flashinfer not available: {error}")
    rows = []
    for dtype in (torch.float16, torch.bfloat16):
        for causal in (False, True):
            for L in lengths:
                q = torch.randn(L, HQ, D, dtype=dtype, device="cuda")
                k = torch.randn(L, HKV, D, dtype=dtype, device="cuda")
                v = torch.randn(L, HKV, D, dtype=dtype, device="cuda")
                flops = 4.0 * L * L * D * HQ / (2 if causal else 1)
                iters = 30 if L <= 4096 else 10
                ours = timed(lambda: tfo.single_prefill_with_kv_cache(q, k, v, causal=causal, backend="fa2"), iters)
                row = {"dtype": str(dtype).replace("torch.", ""), "causal": causal, "L": L,
                       "ours": flops / ours * 1e-12}
                for name, make in peers.items():
                    try:
                        row[name] = flops / timed(make(q, k, v, causal), iters) * 1e-12
                    except Exception as error:
                        print(f"{name} failed at {row}: {str(error).splitlines()[0]}")
                        row[name] = None
                rows.append(row)
                print(row, flush=True)
    names = ["ours"] + list(peers)
    head = "| dtype | causal | L | " + " | ".join(f"{n} TFLOP/s" for n in names) + " | " + \
        " | ".join(f"ours / {n}" for n in names[1:]) + " |"
    lines = [head, "|" + " --- |" * (3 + 2 * len(names) - 1)]
    for r in rows:
        vals = [f"{r[n]:.1f}" if r.get(n) else "n/a" for n in names]
        ratios = [f"{r['ours'] / r[n]:.2f}" if r.get(n) else "n/a" for n in names[1:]]
        lines.append(f"| {r['dtype']} | {r['causal']} | {r['L']} | " + " | ".join(vals + ratios) + " |")
    table = "\n".join(lines)
    device = torch.cuda.get_device_name()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    header = (f"device: {device}; date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
              f"commit: {commit}; torch {torch.__version__}\n\n")
    print(header + table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(header + table + "\n")


if __name__ == "__main__":
    main()
