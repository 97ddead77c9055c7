"""GPU prefill kernels (backend fa2 on CUDA) against the float64 reference.

Fresh random inputs per case; outputs poisoned with NaN before each run; paged caches pad their
unused slots with NaN so a read past a request's last token shows. The reference runs in float64
on the GPU, query rows in chunks, with the visibility mask built by tests/reference.py.
"""
import math

import pytest
import torch

import reference as R
from pdl_chain import assert_pdl_chain_matches, attention_chain, device_has_pdl

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA/HIP GPU", allow_module_level=True)

import torch_flashinfer_ops as flashinfer  # noqa: E402
from torch_flashinfer_ops._ops import gpu_kernels_built, ops  # noqa: E402

if not gpu_kernels_built():
    pytest.skip("this build has no GPU kernels", allow_module_level=True)

DEV = torch.device("cuda")
NHD, HND = 0, 1


def rand(*shape, dtype):
    return torch.randn(*shape, dtype=torch.float32).to(dtype)


def reference(q, k, v, causal=False, window_left=-1, cap=None, sm_scale=None, mask=None,
              k_scale=1.0, v_scale=1.0):
    """(out float64, lse float64) for one request, NHD inputs on the CPU; computed on the GPU."""
    qo_len, kv_len = q.shape[0], k.shape[0]
    vis = R.visibility_mask(qo_len, kv_len, causal, window_left, mask)
    kd = R.dequant(k, k_scale).to(DEV)
    vd = R.dequant(v, v_scale).to(DEV)
    outs, lses = [], []
    step = max(1, (1 << 26) // max(1, kv_len * q.shape[1]))
    for i0 in range(0, qo_len, step):
        o, l = R.attention_ref(q[i0:i0 + step].to(DEV), kd, vd, sm_scale=sm_scale,
                               logits_soft_cap=cap, custom_mask=vis[i0:i0 + step].to(DEV))
        outs.append(o.cpu())
        lses.append(l.cpu())
    if qo_len == 0:
        hq, d = q.shape[1], q.shape[2]
        return torch.zeros(0, hq, d, dtype=torch.float64), torch.zeros(0, hq, dtype=torch.float64)
    return torch.cat(outs), torch.cat(lses)


def check(out, lse, ref_out, ref_lse, dtype, msg):
    R.assert_attention_close(out.cpu(), ref_out, dtype, msg)
    if lse is not None:
        R.assert_lse_close(lse.cpu(), ref_lse.float(), msg)


def poisoned(shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype, device=DEV)


# ----------------------------------------------------------------------------------------------
# single_prefill

SINGLE_CASES = [
    # dtype, head_dim, qo_len, kv_len, hq, hkv, causal, layout, options
    (torch.float16, 128, 512, 512, 8, 2, True, "NHD", {}),
    (torch.bfloat16, 128, 512, 512, 8, 2, True, "NHD", {}),
    (torch.float16, 128, 300, 777, 8, 8, False, "NHD", {}),
    (torch.bfloat16, 128, 300, 777, 8, 1, True, "HND", {}),
    (torch.float16, 64, 257, 1000, 8, 2, True, "NHD", {}),
    (torch.bfloat16, 256, 129, 500, 4, 4, True, "HND", {}),
    (torch.float16, 256, 200, 200, 6, 2, False, "NHD", {}),
    (torch.float16, 128, 1, 1000, 32, 8, True, "NHD", {}),
    (torch.float16, 128, 37, 300, 6, 2, True, "NHD", {}),  # GQA ratio 3
    (torch.float16, 64, 129, 500, 10, 2, True, "NHD", {}),  # GQA ratio 5: rows 16 apart carry
    (torch.float16, 128, 1000, 1000, 16, 1, True, "NHD", {}),  # MQA
    (torch.float16, 128, 700, 900, 8, 2, True, "NHD", {"window_left": 100}),
    (torch.bfloat16, 64, 300, 300, 4, 2, False, "HND", {"window_left": 31}),
    (torch.float16, 128, 400, 600, 8, 2, True, "NHD", {"cap": 30.0}),
    (torch.bfloat16, 256, 100, 333, 4, 1, False, "NHD", {"cap": 5.0, "sm_scale": 0.2}),
    (torch.float16, 128, 211, 345, 8, 4, False, "NHD", {"mask": True}),
    (torch.bfloat16, 64, 64, 64, 4, 4, False, "HND", {"mask": True}),
    (torch.float16, 128, 16384, 16384, 2, 1, True, "NHD", {}),
    (torch.float16, 128, 256, 4096, 4, 2, False, "NHD", {"k_scale": 0.5, "v_scale": 2.0}),
    # A few query tokens against a long kv at the benchmark's heads: split into many chunks.
    (torch.float16, 128, 16, 8192, 32, 8, True, "NHD", {}),
    (torch.bfloat16, 128, 128, 4096, 32, 8, False, "NHD", {}),
    (torch.float16, 128, 70, 3000, 32, 8, True, "HND", {"window_left": 1000}),
    # Split launches of the custom-mask and soft-cap paths (the latter with 32-row K/V tiles).
    (torch.float16, 128, 16, 2048, 8, 2, False, "NHD", {"mask": True}),
    (torch.bfloat16, 128, 20, 3000, 8, 2, True, "NHD", {"cap": 30.0}),
    # head_dim 256's single-request kernels on NVIDIA (64-row K/V tiles, one buffer each): masks,
    # window and soft cap over many tiles, split and not.
    (torch.float16, 256, 300, 1500, 8, 2, True, "NHD", {"window_left": 200}),
    (torch.bfloat16, 256, 16, 4096, 32, 8, False, "NHD", {"mask": True}),
    (torch.float16, 256, 20, 3000, 8, 2, True, "HND", {"cap": 30.0}),
]


# Launches that leave most of the GPU idle are split over kv (csrc/include/single_prefill_split.h;
# on an H100/H200 the short-q, long-kv cases above are): each case runs as the policy launches it
# and with the split off.
@pytest.mark.parametrize("max_splits", ["policy", "1"])
@pytest.mark.parametrize("case", SINGLE_CASES, ids=lambda c: "-".join(
    str(x).replace("torch.", "") for x in c[:8]) + ("-" + "-".join(c[8]) if c[8] else ""))
def test_single_prefill(case, max_splits, monkeypatch):
    if max_splits != "policy":
        monkeypatch.setenv("TFO_SINGLE_PREFILL_MAX_SPLITS", max_splits)
    dtype, d, qo_len, kv_len, hq, hkv, causal, layout, opt = case
    q, k, v = rand(qo_len, hq, d, dtype=dtype), rand(kv_len, hkv, d, dtype=dtype), rand(kv_len, hkv, d, dtype=dtype)
    mask = R.random_mask(qo_len, kv_len) if opt.get("mask") else None
    window = opt.get("window_left", -1)
    cap = opt.get("cap")
    sm_scale = opt.get("sm_scale", 1.0 / math.sqrt(d))
    ks, vs = opt.get("k_scale", 1.0), opt.get("v_scale", 1.0)
    ref_out, ref_lse = reference(q, k, v, causal, window, cap, sm_scale, mask, ks, vs)
    o = poisoned((qo_len, hq, d), dtype)
    lse = poisoned((qo_len, hq), torch.float32)
    packed = R.packbits_little(mask).to(DEV) if mask is not None else None
    kk, vv = R.to_layout(k, layout).to(DEV), R.to_layout(v, layout).to(DEV)
    ops.single_prefill(q.to(DEV), kk, vv, o, lse, packed, NHD if layout == "NHD" else HND, causal,
                       window, sm_scale, cap or 0.0, ks, vs)
    check(o, lse, ref_out, ref_lse, dtype, f"single {case}")


def test_single_prefill_grid_past_65535_tiles():
    """More q tiles than a grid's y dimension holds (65535): the launch continues in z. MQA with
    a group of 32 at head_dim 64 packs 32 query rows per token into tiles of at most 128 rows,
    so 262144 + 100 tokens make more than 65536 tiles; a short kv keeps the reference cheap."""
    qo_len, kv_len, hq, d = 262144 + 100, 96, 32, 64
    q, k, v = rand(qo_len, hq, d, dtype=torch.float16), rand(kv_len, 1, d, dtype=torch.float16), \
        rand(kv_len, 1, d, dtype=torch.float16)
    ref_out, ref_lse = reference(q, k, v, causal=False)
    o = poisoned((qo_len, hq, d), torch.float16)
    lse = poisoned((qo_len, hq), torch.float32)
    ops.single_prefill(q.to(DEV), k.to(DEV), v.to(DEV), o, lse, None, NHD, False, -1, d ** -0.5, 0.0, 1.0, 1.0)
    check(o, lse, ref_out, ref_lse, torch.float16, "single, grid past 65535 tiles")


def test_single_prefill_api_and_o_dtype():
    q, k, v = (rand(n, h, 128, dtype=torch.float16) for n, h in ((300, 8), (500, 2), (500, 2)))
    ref_out, ref_lse = reference(q, k, v, causal=True)
    out, lse = flashinfer.single_prefill_with_kv_cache(q.to(DEV), k.to(DEV), v.to(DEV), causal=True,
                                                       backend="fa2", return_lse=True)
    check(out, lse, ref_out, ref_lse, torch.float16, "api")
    out = flashinfer.single_prefill_with_kv_cache(q.to(DEV), k.to(DEV), v.to(DEV), causal=True,
                                                  o_dtype=torch.bfloat16, backend="fa2")
    R.assert_attention_close(out.cpu(), ref_out, torch.bfloat16, "o_dtype bf16")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("d,causal", [(128, False), (128, True), (64, True), (256, False)])
def test_single_prefill_climbing_maxima(dtype, d, causal):
    """Row maxima that creep up over many tiles and then jump (tests/reference.py's
    climbing_scores): the kernels rescale O only once a maximum passes the one in use by more
    than their slack, so both the small moves and the jump must stay exact."""
    qo_len, kv_len, hq, hkv = 300, 1500, 8, 2
    q, k = R.climbing_scores(qo_len, kv_len, hq, hkv, d, dtype)
    v = rand(kv_len, hkv, d, dtype=dtype)
    ref_out, ref_lse = reference(q, k, v, causal)
    o = poisoned((qo_len, hq, d), dtype)
    lse = poisoned((qo_len, hq), torch.float32)
    ops.single_prefill(q.to(DEV), k.to(DEV), v.to(DEV), o, lse, None, NHD, causal, -1, d ** -0.5, 0.0, 1.0, 1.0)
    check(o, lse, ref_out, ref_lse, dtype, f"single, climbing maxima, d{d}")


# NVIDIA's fp16 head_dim 128 single-request kernels come in two epilogues (prefill_policy.h,
# kEpilogueByLength; bf16's have one, the fragment store, and run the same either way):
# launches whose blocks run at most kFewTilesMax (64) K/V tiles stage O through fragment
# stores, longer ones store each element. Each case runs as the policy launches it and with
# either epilogue forced (TFO_SINGLE_PREFILL_FEW_TILES_MAX 0: never the few-tiles one; a large
# value: always), each against the reference; the three differ only in how O is staged, so they
# agree bit for bit. The kv split is off (TFO_SINGLE_PREFILL_MAX_SPLITS 1): split launches take
# neither (these few-block cases would split on an H100/H200).
EPILOGUE_CASES = [
    # dtype, qo_len, kv_len, hq, hkv, causal, layout
    (torch.float16, 1024, 1024, 8, 2, False, "NHD"),
    (torch.bfloat16, 1024, 1024, 8, 2, True, "NHD"),
    (torch.bfloat16, 300, 5000, 8, 1, False, "HND"),  # 79 K/V tiles: the long epilogue by policy
    (torch.float16, 4200, 4200, 4, 2, True, "NHD"),  # the last tile runs 66
    (torch.bfloat16, 77, 4096, 12, 4, True, "NHD"),  # exactly 64
]


@pytest.mark.parametrize("case", EPILOGUE_CASES, ids=lambda c: "-".join(str(x).replace("torch.", "") for x in c))
def test_single_prefill_epilogues_agree(case, monkeypatch):
    dtype, qo_len, kv_len, hq, hkv, causal, layout = case
    d = 128
    monkeypatch.setenv("TFO_SINGLE_PREFILL_MAX_SPLITS", "1")
    q, k, v = rand(qo_len, hq, d, dtype=dtype), rand(kv_len, hkv, d, dtype=dtype), rand(kv_len, hkv, d, dtype=dtype)
    ref_out, ref_lse = reference(q, k, v, causal)
    qq, kk, vv = q.to(DEV), R.to_layout(k, layout).to(DEV), R.to_layout(v, layout).to(DEV)
    results = {}
    for few_tiles_max in ("policy", "0", "1000000"):
        if few_tiles_max == "policy":
            monkeypatch.delenv("TFO_SINGLE_PREFILL_FEW_TILES_MAX", raising=False)
        else:
            monkeypatch.setenv("TFO_SINGLE_PREFILL_FEW_TILES_MAX", few_tiles_max)
        o = poisoned((qo_len, hq, d), dtype)
        lse = poisoned((qo_len, hq), torch.float32)
        ops.single_prefill(qq, kk, vv, o, lse, None, NHD if layout == "NHD" else HND, causal, -1, d ** -0.5,
                           0.0, 1.0, 1.0)
        check(o, lse, ref_out, ref_lse, dtype, f"single {case}, few-tiles max {few_tiles_max}")
        results[few_tiles_max] = (o.cpu(), lse.cpu())
    for name, (o, lse) in results.items():
        torch.testing.assert_close(o, results["0"][0], rtol=0, atol=0, msg=lambda m: f"{name} vs 0: {m}")
        torch.testing.assert_close(lse, results["0"][1], rtol=0, atol=0, msg=lambda m: f"{name} vs 0: {m}")


# ----------------------------------------------------------------------------------------------
# Batches (ragged and paged) through the wrappers

def make_batch(qo_lens, kv_lens, hq, hkv, d, dtype):
    qs = [rand(n, hq, d, dtype=dtype) for n in qo_lens]
    ks = [rand(n, hkv, d, dtype=dtype) for n in kv_lens]
    vs = [rand(n, hkv, d, dtype=dtype) for n in kv_lens]
    return qs, ks, vs


def batch_reference(qs, ks, vs, causal, window=-1, cap=None, masks=None):
    outs, lses = [], []
    for i, (q, k, v) in enumerate(zip(qs, ks, vs)):
        o, l = reference(q, k, v, causal, window, cap, None, masks[i] if masks else None)
        outs.append(o)
        lses.append(l)
    return torch.cat(outs), torch.cat(lses)


def workspace():
    return torch.empty(128 << 20, dtype=torch.uint8, device=DEV)


BATCH_CASES = [
    # dtype, head_dim, qo_lens, kv_lens, hq, hkv, causal, layout, options
    (torch.float16, 128, [1, 17, 64, 129, 300, 5, 77], [1, 40, 64, 500, 300, 900, 77], 8, 2, True, "NHD", {}),
    (torch.bfloat16, 128, [33, 0, 250], [100, 10, 250], 8, 1, False, "HND", {}),
    (torch.float16, 64, [16] * 64, [(i * 37) % 200 + 16 for i in range(64)], 4, 4, True, "NHD", {}),
    (torch.float16, 256, [100, 3], [300, 1000], 8, 8, True, "NHD", {}),
    (torch.float16, 128, [16], [4096], 8, 2, True, "NHD", {}),  # split kv + merge
    # GQA ratio 3 (the copy-out's rows straddle tokens), one request split
    (torch.float16, 128, [16, 5, 37], [4096, 300, 100], 6, 2, True, "NHD", {}),
    # 16 tokens on a 32k cache beside a 4k prompt: the long unit is split to balance the grid
    (torch.float16, 128, [16, 4096], [32768, 4096], 8, 2, True, "NHD", {}),
    (torch.bfloat16, 128, [200, 64], [3000, 2500], 4, 1, False, "HND", {"window_left": 500}),
    (torch.float16, 128, [100, 57], [300, 200], 8, 2, False, "NHD", {"cap": 20.0}),
    (torch.float16, 128, [100, 57, 9], [120, 200, 9], 8, 2, False, "NHD", {"mask": True}),
    # head_dim 256's planned kernels on NVIDIA (64-row K/V tiles, one buffer each): a long
    # request beside short ones, window, soft cap, custom masks
    (torch.bfloat16, 256, [16, 300, 7], [3000, 300, 70], 8, 2, True, "NHD", {}),
    (torch.float16, 256, [130, 64], [700, 1000], 4, 1, False, "HND", {"window_left": 150, "cap": 30.0}),
    (torch.bfloat16, 256, [40, 65], [200, 130], 8, 4, False, "NHD", {"mask": True}),
]


def _ids(c):
    return "-".join([str(c[0]).replace("torch.", ""), str(c[1]), f"b{len(c[2])}", f"h{c[4]}x{c[5]}",
                     "causal" if c[6] else "full", c[7]] + list(c[8]))


@pytest.mark.parametrize("case", BATCH_CASES, ids=_ids)
def test_batch_ragged(case):
    dtype, d, qo_lens, kv_lens, hq, hkv, causal, layout, opt = case
    qs, ks, vs = make_batch(qo_lens, kv_lens, hq, hkv, d, dtype)
    masks = [R.random_mask(a, b) for a, b in zip(qo_lens, kv_lens)] if opt.get("mask") else None
    window, cap = opt.get("window_left", -1), opt.get("cap")
    ref_out, ref_lse = batch_reference(qs, ks, vs, causal, window, cap, masks)
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace(), layout, backend="fa2")
    w.plan(R.indptr_from_lens(qo_lens), R.indptr_from_lens(kv_lens), hq, hkv, d, causal=causal,
           window_left=window, logits_soft_cap=cap, q_data_type=dtype,
           custom_mask=torch.cat([m.reshape(-1) for m in masks]) if masks else None)
    q = torch.cat(qs).to(DEV)
    k = R.to_layout(torch.cat(ks), layout).to(DEV)
    v = R.to_layout(torch.cat(vs), layout).to(DEV)
    out, lse = poisoned(q.shape, dtype), poisoned(q.shape[:2], torch.float32)
    w.run(q, k, v, out=out, lse=lse, return_lse=True)
    check(out, lse, ref_out, ref_lse, dtype, f"ragged {_ids(case)}")


PAGED_CASES = [
    # dtype, head_dim, page_size, qo_lens, kv_lens, hq, hkv, causal, layout, options
    (torch.float16, 128, 1, [5, 30], [40, 30], 8, 2, True, "NHD", {}),
    (torch.float16, 128, 16, [1, 17, 64, 129, 300], [33, 40, 64, 517, 300], 8, 2, True, "HND", {}),
    (torch.bfloat16, 128, 32, [100, 1, 63], [1000, 1, 95], 8, 8, False, "NHD", {}),
    (torch.float16, 64, 64, [128, 50], [200, 1000], 32, 4, True, "NHD", {}),
    (torch.bfloat16, 256, 16, [70, 3], [300, 77], 8, 1, True, "HND", {}),
    (torch.float16, 128, 16, [16, 8], [3000, 4095], 8, 2, True, "NHD", {}),  # split kv + merge
    (torch.float16, 128, 16, [60, 90], [160, 300], 8, 2, True, "NHD", {"cap": 30.0, "window_left": 64}),
    (torch.bfloat16, 128, 32, [40, 41], [50, 100], 4, 2, False, "HND", {"mask": True}),
    (torch.float16, 128, 12, [33, 5, 64], [100, 61, 64], 8, 2, True, "NHD", {}),  # page size not a power of two
    # head_dim 256's planned kernels on NVIDIA (64-row K/V tiles, one buffer each)
    (torch.float16, 256, 1, [33, 100], [90, 400], 8, 2, True, "NHD", {}),
    (torch.bfloat16, 256, 16, [16, 200], [3001, 777], 8, 2, True, "HND", {"window_left": 300}),
    (torch.float16, 256, 64, [50, 31], [129, 2000], 4, 4, False, "NHD", {"cap": 20.0, "mask": True}),
]


def _pids(c):
    return "-".join([str(c[0]).replace("torch.", ""), str(c[1]), f"p{c[2]}", f"b{len(c[3])}",
                     f"h{c[5]}x{c[6]}", "causal" if c[7] else "full", c[8]] + list(c[9]))


@pytest.mark.parametrize("case", PAGED_CASES, ids=_pids)
def test_batch_paged(case):
    dtype, d, page_size, qo_lens, kv_lens, hq, hkv, causal, layout, opt = case
    qs, ks, vs = make_batch(qo_lens, kv_lens, hq, hkv, d, dtype)
    masks = [R.random_mask(a, b) for a, b in zip(qo_lens, kv_lens)] if opt.get("mask") else None
    window, cap = opt.get("window_left", -1), opt.get("cap")
    ref_out, ref_lse = batch_reference(qs, ks, vs, causal, window, cap, masks)
    paged = R.build_paged_kv(ks, vs, page_size, layout, single_tensor=False, pad_fill=float("nan"))
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace(), layout, backend="fa2")
    w.plan(R.indptr_from_lens(qo_lens), paged.indptr, paged.indices, paged.last_page_len, hq, hkv, d,
           page_size, causal=causal, window_left=window, logits_soft_cap=cap, q_data_type=dtype,
           custom_mask=torch.cat([m.reshape(-1) for m in masks]) if masks else None)
    q = torch.cat(qs).to(DEV)
    cache = (paged.cache[0].to(DEV), paged.cache[1].to(DEV))
    out, lse = poisoned(q.shape, dtype), poisoned(q.shape[:2], torch.float32)
    w.run(q, cache, out=out, lse=lse, return_lse=True)
    check(out, lse, ref_out, ref_lse, dtype, f"paged {_pids(case)}")


@pytest.mark.parametrize("kind", ["ragged", "paged"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_batch_climbing_maxima(kind, dtype):
    """The planned kernels on rows whose maxima creep up and then jump (see
    test_single_prefill_climbing_maxima), one request split over kv."""
    qo_lens, kv_lens, hq, hkv, d = [40, 16, 300], [900, 4096, 700], 8, 2, 128
    qs, ks = zip(*(R.climbing_scores(a, b, hq, hkv, d, dtype) for a, b in zip(qo_lens, kv_lens)))
    vs = [rand(n, hkv, d, dtype=dtype) for n in kv_lens]
    ref_out, ref_lse = batch_reference(qs, ks, vs, True)
    q = torch.cat(qs).to(DEV)
    out, lse = poisoned(q.shape, dtype), poisoned(q.shape[:2], torch.float32)
    if kind == "ragged":
        w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace(), "NHD", backend="fa2")
        w.plan(R.indptr_from_lens(qo_lens), R.indptr_from_lens(kv_lens), hq, hkv, d, causal=True, q_data_type=dtype)
        w.run(q, torch.cat(ks).to(DEV), torch.cat(vs).to(DEV), out=out, lse=lse, return_lse=True)
    else:
        paged = R.build_paged_kv(list(ks), vs, 16, "NHD", single_tensor=False, pad_fill=float("nan"))
        w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace(), "NHD", backend="fa2")
        w.plan(R.indptr_from_lens(qo_lens), paged.indptr, paged.indices, paged.last_page_len, hq, hkv, d, 16,
               causal=True, q_data_type=dtype)
        w.run(q, (paged.cache[0].to(DEV), paged.cache[1].to(DEV)), out=out, lse=lse, return_lse=True)
    check(out, lse, ref_out, ref_lse, dtype, f"{kind}, climbing maxima")


@pytest.mark.parametrize("kind", ["ragged", "paged"])
def test_batch_work_lists(kind, monkeypatch):
    """plan() gives each block of the persistent grid a list of units balanced by cost (causal
    q tiles of uneven requests); the kernel runs them, and the output equals, bit for bit, the
    run of a plan without lists (units taken in turn), and the reference."""
    from torch_flashinfer_ops import prefill as prefill_module
    from torch_flashinfer_ops._ops import prefill_grid_blocks

    dtype, d, hq, hkv, page_size = torch.float16, 128, 8, 2, 16
    qo_lens, kv_lens = [300, 1, 77, 1024, 129], [300, 900, 500, 1024, 129]
    qs, ks, vs = make_batch(qo_lens, kv_lens, hq, hkv, d, dtype)
    ref_out, ref_lse = batch_reference(qs, ks, vs, True)
    q = torch.cat(qs).to(DEV)
    paged = R.build_paged_kv(ks, vs, page_size, "NHD", single_tensor=False, pad_fill=float("nan"))
    cache = (paged.cache[0].to(DEV), paged.cache[1].to(DEV))
    k, v = torch.cat(ks).to(DEV), torch.cat(vs).to(DEV)

    def run():
        if kind == "paged":
            w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace(), "NHD", backend="fa2")
            w.plan(R.indptr_from_lens(qo_lens), paged.indptr, paged.indices, paged.last_page_len, hq, hkv, d,
                   page_size, causal=True, q_data_type=dtype)
        else:
            w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace(), "NHD", backend="fa2")
            w.plan(R.indptr_from_lens(qo_lens), R.indptr_from_lens(kv_lens), hq, hkv, d, causal=True,
                   q_data_type=dtype)
        out, lse = poisoned(q.shape, dtype), poisoned(q.shape[:2], torch.float32)
        if kind == "paged":
            w.run(q, cache, out=out, lse=lse, return_lse=True)
        else:
            w.run(q, k, v, out=out, lse=lse, return_lse=True)
        return out, lse, int(w._plan.plan_info[3])

    out, lse, lists = run()
    assert lists == prefill_grid_blocks(dtype, d, kind == "paged", False) > 0, "the plan carries no work lists"
    check(out, lse, ref_out, ref_lse, dtype, f"{kind} with work lists")
    monkeypatch.setattr(prefill_module._PrefillWrapperBase, "_work_lists", lambda self, *args: {})
    out_turns, lse_turns, lists = run()
    assert lists == 0
    assert torch.equal(out, out_turns) and torch.equal(lse, lse_turns)


def test_paged_cuda_graph_replays_a_later_plan():
    """A graph captured for one plan replays correctly after plan() rewrites the schedule."""
    dtype, d, hq, hkv, page_size, batch, total_qo = torch.float16, 128, 8, 2, 16, 4, 256
    max_pages = 512
    bufs = dict(qo_indptr_buf=torch.empty(batch + 1, dtype=torch.int32, device=DEV),
                paged_kv_indptr_buf=torch.empty(batch + 1, dtype=torch.int32, device=DEV),
                paged_kv_indices_buf=torch.empty(max_pages, dtype=torch.int32, device=DEV),
                paged_kv_last_page_len_buf=torch.empty(batch, dtype=torch.int32, device=DEV))
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace(), "NHD", use_cuda_graph=True,
                                                       backend="fa2", **bufs)
    q = torch.empty(total_qo, hq, d, dtype=dtype, device=DEV)
    out = torch.empty_like(q)
    cache = None

    def setup(qo_lens, kv_lens):
        nonlocal cache
        qs, ks, vs = make_batch(qo_lens, kv_lens, hq, hkv, d, dtype)
        paged = R.build_paged_kv(ks, vs, page_size, "NHD", single_tensor=False, extra_pages=0)
        pages = torch.full((max_pages, page_size, hkv, d), float("nan"), dtype=dtype)
        pages_v = pages.clone()
        pages[: paged.num_pages] = paged.cache[0]
        pages_v[: paged.num_pages] = paged.cache[1]
        if cache is None:
            cache = (pages.to(DEV), pages_v.to(DEV))
        else:
            cache[0].copy_(pages)
            cache[1].copy_(pages_v)
        w.plan(R.indptr_from_lens(qo_lens), paged.indptr, paged.indices, paged.last_page_len, hq, hkv,
               d, page_size, causal=True, q_data_type=dtype)
        q.copy_(torch.cat(qs))
        return batch_reference(qs, ks, vs, True)[0]

    ref_a = setup([64, 64, 64, 64], [64, 300, 1000, 64])
    w.run(q, cache, out=out)  # warm up outside the graph
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        w.run(q, cache, out=out)
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    R.assert_attention_close(out.cpu(), ref_a, dtype, "graph, first plan")
    ref_b = setup([1, 200, 5, 50], [2000, 200, 40, 3000])  # splits kv: partial rows + merge
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    R.assert_attention_close(out.cpu(), ref_b, dtype, "graph, later plan")


def _pdl_chain(w, run, q0, ref_out, dtype):
    """A chain of runs whose q a kernel computes from the run before's output, with enable_pdl
    True against False: eager, and captured in a CUDA graph (outputs poisoned before the replay),
    bitwise equal (pdl_chain.py); the first run matches the float64 reference. The plan must
    split a request, so that the merge launch (itself a dependent launch) waits for the prefill
    launch's partial rows."""
    assert int(w._workspace.plan_host[4]) > 0, "a request must be split (plan_info: partial rows)"
    chain = attention_chain(run, q0)
    want = [o.clone() for o in chain(False)]
    R.assert_attention_close(want[0].cpu(), ref_out, dtype, "out (run 0):")
    assert_pdl_chain_matches(chain, want)


# The first request (16 tokens on 8k) is split; the others are not.
PDL_BATCH = dict(qo_lens=[16, 300, 37], kv_lens=[8192, 300, 100], hq=8, hkv=2, d=128, dtype=torch.float16)


@pytest.mark.skipif(not device_has_pdl(), reason="programmatic dependent launch: NVIDIA sm_90+")
def test_batch_ragged_pdl_waits_for_the_kernel_before():
    """enable_pdl=True: a prefill launch and its merge launch may begin while the kernel before
    finishes, and must wait for it before reading (_pdl_chain)."""
    b = PDL_BATCH
    qs, ks, vs = make_batch(b["qo_lens"], b["kv_lens"], b["hq"], b["hkv"], b["d"], b["dtype"])
    ref_out, _ = batch_reference(qs, ks, vs, True)
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace(), "NHD", backend="fa2")
    w.plan(R.indptr_from_lens(b["qo_lens"]), R.indptr_from_lens(b["kv_lens"]), b["hq"], b["hkv"], b["d"],
           causal=True, q_data_type=b["dtype"])
    k, v = torch.cat(ks).to(DEV), torch.cat(vs).to(DEV)
    _pdl_chain(w, lambda q, pdl: w.run(q, k, v, enable_pdl=pdl), torch.cat(qs).to(DEV), ref_out, b["dtype"])


@pytest.mark.skipif(not device_has_pdl(), reason="programmatic dependent launch: NVIDIA sm_90+")
def test_batch_paged_pdl_waits_for_the_kernel_before():
    """As the ragged test, through the paged cache."""
    b, page_size = PDL_BATCH, 16
    qs, ks, vs = make_batch(b["qo_lens"], b["kv_lens"], b["hq"], b["hkv"], b["d"], b["dtype"])
    ref_out, _ = batch_reference(qs, ks, vs, True)
    paged = R.build_paged_kv(ks, vs, page_size, "NHD", single_tensor=False, pad_fill=float("nan"))
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace(), "NHD", backend="fa2")
    w.plan(R.indptr_from_lens(b["qo_lens"]), paged.indptr, paged.indices, paged.last_page_len, b["hq"], b["hkv"],
           b["d"], page_size, causal=True, q_data_type=b["dtype"])
    cache = (paged.cache[0].to(DEV), paged.cache[1].to(DEV))
    _pdl_chain(w, lambda q, pdl: w.run(q, cache, enable_pdl=pdl), torch.cat(qs).to(DEV), ref_out, b["dtype"])


def test_api_refuses_unserved_head_dim():
    q = torch.randn(16, 4, 96, dtype=torch.float16, device=DEV)
    with pytest.raises(ValueError, match="head_dim 96"):
        flashinfer.single_prefill_with_kv_cache(q, q, q, backend="fa2")
