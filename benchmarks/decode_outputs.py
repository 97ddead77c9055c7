"""A fixed set of seeded batch decode calls of torch_flashinfer_ops (the benchmark's shapes: page
16, 32/8 heads, d128), their outputs and lse saved to one file, so that two builds can be
compared bitwise (benchmarks/ab_trees.py --outputs): a change that should not alter the
arithmetic must leave every call's bits as they were.

    python benchmarks/decode_outputs.py --out FILE [--calls NAME,...]

Calls: both kernel paths (simt, mma) x fp16 and FP8 e4m3 caches x batch 1 / 16 / 64 at kv 1k and
4k, plus batch 1 at kv 16k and an uneven batch (lengths 1..8k), each on inputs drawn from a seed
of its own.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_decode import D, HKV, HQ, PAGE, paged_inputs  # noqa: E402
from bench_report import import_ours  # noqa: E402

WORKSPACE_BYTES = 256 << 20


def calls():
    """name: (kv_lens, kv dtype, use_tensor_cores)."""
    table = {}
    for path, mma in (("simt", False), ("mma", True)):
        for kv_name, kv_dtype in (("f16", torch.float16), ("e4m3", torch.float8_e4m3fn)):
            for bs, kv in ((1, 1024), (1, 4096), (16, 1024), (16, 4096), (64, 1024), (64, 4096), (1, 16384)):
                table[f"{path}-{kv_name}-bs{bs}-kv{kv}"] = ([kv] * bs, kv_dtype, mma)
            table[f"{path}-{kv_name}-uneven"] = ([1, 15, 16, 17, 300, 1000, 4097, 8000], kv_dtype, mma)
    return table


def run_call(tfo, kv_lens, kv_dtype, use_tensor_cores, seed):
    torch.manual_seed(seed)
    x = paged_inputs(torch.tensor(kv_lens, dtype=torch.int64), kv_dtype)
    workspace = torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device="cuda")
    wrapper = tfo.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", use_tensor_cores=use_tensor_cores)
    wrapper.plan(x.indptr, x.indices, x.last, HQ, HKV, D, PAGE, q_data_type=x.q.dtype, kv_data_type=kv_dtype)
    scales = dict(k_scale=1.0, v_scale=1.0) if kv_dtype.itemsize == 1 else {}
    out, lse = wrapper.run(x.q, x.cache, return_lse=True, **scales)
    return out.cpu(), lse.cpu()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="file for {call: (out, lse)} (torch.save)")
    parser.add_argument("--calls", help="comma-separated call names (default: all)")
    args = parser.parse_args(argv)
    table = calls()
    names = list(table) if not args.calls else args.calls.split(",")
    unknown = [n for n in names if n not in table]
    if unknown:
        sys.exit(f"unknown calls {unknown}; known: {', '.join(table)}")
    if not torch.cuda.is_available():
        sys.exit("decode_outputs.py needs a CUDA GPU")
    tfo = import_ours()
    results = {}
    for seed, name in enumerate(table):
        if name in names:
            results[name] = run_call(tfo, *table[name], seed=seed)
    torch.save(results, args.out)
    print(f"# {len(results)} calls of {tfo.__file__} -> {args.out}")


if __name__ == "__main__":
    main()
