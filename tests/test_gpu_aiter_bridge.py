"""The AITER bridge end to end on a GPU: AITER's Triton kernels (on NVIDIA when opted in
with TORCH_FLASHINFER_OPS_AITER_TRITON=1) against the float64 reference, through the
public API with backend="aiter"."""
import os
import subprocess
import sys

import pytest
import torch

import torch_flashinfer_ops as flashinfer
from torch_flashinfer_ops import aiter_bridge
from torch_flashinfer_ops.capabilities import platform_of

import reference as ref

pytestmark = pytest.mark.gpu


def _aiter_ready():
    if not torch.cuda.is_available():
        return "no GPU"
    return aiter_bridge.unavailable_reason(platform_of(torch.device("cuda")))


_reason = _aiter_ready()
skip_unless_aiter = pytest.mark.skipif(_reason is not None, reason=str(_reason))


@skip_unless_aiter
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("qo_len,kv_len,hq,hkv,d", [(1024, 1024, 32, 8, 128), (77, 300, 8, 1, 64), (128, 128, 4, 4, 256)])
def test_single_prefill(dtype, causal, qo_len, kv_len, hq, hkv, d):
    torch.manual_seed(qo_len + kv_len)
    q = torch.randn(qo_len, hq, d, dtype=dtype, device="cuda")
    k = torch.randn(kv_len, hkv, d, dtype=dtype, device="cuda")
    v = torch.randn(kv_len, hkv, d, dtype=dtype, device="cuda")
    out, lse = flashinfer.single_prefill_with_kv_cache(q, k, v, causal=causal, backend="aiter", return_lse=True)
    o_ref, lse_ref = ref.attention_ref(q.cpu(), k.cpu(), v.cpu(), causal=causal)
    ref.assert_attention_close(out.cpu(), o_ref, dtype)
    ref.assert_lse_close(lse.cpu(), lse_ref.float())


@skip_unless_aiter
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ragged_prefill(dtype):
    torch.manual_seed(0)
    qo_lens, kv_lens, hq, hkv, d = [5, 130, 1, 64], [40, 130, 7, 200], 16, 4, 128
    qs = [torch.randn(n, hq, d, dtype=dtype) for n in qo_lens]
    ks = [torch.randn(n, hkv, d, dtype=dtype) for n in kv_lens]
    vs = [torch.randn(n, hkv, d, dtype=dtype) for n in kv_lens]
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(torch.empty(64 << 20, dtype=torch.uint8, device="cuda"),
                                                        backend="aiter")
    w.plan(ref.indptr_from_lens(qo_lens).cuda(), ref.indptr_from_lens(kv_lens).cuda(), hq, hkv, d, causal=True,
           q_data_type=dtype)
    out = torch.full((sum(qo_lens), hq, d), float("nan"), dtype=dtype, device="cuda")
    _, lse = w.run(torch.cat(qs).cuda(), torch.cat(ks).cuda(), torch.cat(vs).cuda(), out=out, return_lse=True)
    start = 0
    for q, k, v in zip(qs, ks, vs):
        o_ref, lse_ref = ref.attention_ref(q, k, v, causal=True)
        ref.assert_attention_close(out[start:start + len(q)].cpu(), o_ref, dtype)
        ref.assert_lse_close(lse[start:start + len(q)].cpu(), lse_ref.float())
        start += len(q)


@skip_unless_aiter
@pytest.mark.parametrize("page_size", [16, 32])
@pytest.mark.parametrize("window_left,cap", [(-1, None), (50, None), (-1, 30.0)])
def test_paged_prefill_causal(page_size, window_left, cap):
    torch.manual_seed(page_size)
    dtype, hq, hkv, d = torch.float16, 32, 8, 128
    qo_lens, kv_lens = [17, 300, 1], [40, 300, 33]
    qs = [torch.randn(n, hq, d, dtype=dtype) for n in qo_lens]
    ks = [torch.randn(n, hkv, d, dtype=dtype) for n in kv_lens]
    vs = [torch.randn(n, hkv, d, dtype=dtype) for n in kv_lens]
    paged = ref.build_paged_kv(ks, vs, page_size)
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(torch.empty(64 << 20, dtype=torch.uint8, device="cuda"),
                                                       "NHD", backend="aiter")
    w.plan(ref.indptr_from_lens(qo_lens).cuda(), paged.indptr.cuda(), paged.indices.cuda(),
           paged.last_page_len.cuda(), hq, hkv, d, page_size, causal=True, window_left=window_left,
           logits_soft_cap=cap)
    out = torch.full((sum(qo_lens), hq, d), float("nan"), dtype=dtype, device="cuda")
    w.run(torch.cat(qs).cuda(), paged.cache.cuda(), out=out)
    start = 0
    for q, k, v in zip(qs, ks, vs):
        o_ref, _ = ref.attention_ref(q, k, v, causal=True, window_left=window_left, logits_soft_cap=cap)
        ref.assert_attention_close(out[start:start + len(q)].cpu(), o_ref, dtype)
        start += len(q)


@skip_unless_aiter
@pytest.mark.parametrize("kv_dtype,scale", [(torch.float16, None), (torch.float8_e4m3fn, 0.5)])
def test_paged_decode(kv_dtype, scale):
    torch.manual_seed(3)
    hq, hkv, d, page_size = 32, 8, 128, 16
    kv_lens = [1, 15, 16, 1000, 4097]
    q = torch.randn(len(kv_lens), hq, d, dtype=torch.float16)
    ks = [torch.randn(n, hkv, d).to(kv_dtype) for n in kv_lens]
    vs = [torch.randn(n, hkv, d).to(kv_dtype) for n in kv_lens]
    paged = ref.build_paged_kv(ks, vs, page_size)
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(torch.empty(64 << 20, dtype=torch.uint8, device="cuda"),
                                                      "NHD", backend="aiter")
    w.plan(paged.indptr.cuda(), paged.indices.cuda(), paged.last_page_len.cuda(), hq, hkv, d, page_size,
           logits_soft_cap=20.0, kv_data_type=kv_dtype)
    out = torch.full_like(q, float("nan")).cuda()
    w.run(q.cuda(), paged.cache.cuda(), out=out, k_scale=scale, v_scale=scale)
    for b in range(len(kv_lens)):
        o_ref, _ = ref.decode_ref(q[b], ref.dequant(ks[b], scale), ref.dequant(vs[b], scale), logits_soft_cap=20.0)
        ref.assert_attention_close(out[b].cpu(), o_ref, torch.float16)


@skip_unless_aiter
def test_unserved_options_are_refused():
    q = torch.randn(8, 4, 64, dtype=torch.float16, device="cuda")
    k = torch.randn(8, 4, 64, dtype=torch.float16, device="cuda")
    with pytest.raises(ValueError, match="sliding_window"):
        flashinfer.single_prefill_with_kv_cache(q, k, k, window_left=3, backend="aiter")
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(torch.empty(1 << 20, dtype=torch.uint8, device="cuda"),
                                                       backend="aiter")
    indptr = torch.tensor([0, 1], dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match="causal-only"):
        w.plan(torch.tensor([0, 8], dtype=torch.int32), indptr, indptr[:1], torch.tensor([8], dtype=torch.int32),
               4, 4, 64, 16, causal=False)
    w.plan(torch.tensor([0, 8], dtype=torch.int32), indptr, indptr[:1], torch.tensor([8], dtype=torch.int32),
           4, 4, 64, 16, causal=True)
    with pytest.raises(ValueError, match="return_lse"):
        w.run(q, torch.randn(1, 2, 16, 4, 64, dtype=torch.float16, device="cuda"), return_lse=True)


@skip_unless_aiter
@pytest.mark.parametrize("example", ["blog_single_prefill.py", "blog_batch_paged_prefill.py"])
def test_blog_examples_with_aiter(example):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TFO_EXAMPLE_BACKEND="aiter")
    result = subprocess.run([sys.executable, os.path.join(root, "examples", example)], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "backend=aiter" in result.stdout
