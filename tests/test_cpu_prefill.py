"""CPU tier: single and batch (paged, ragged) prefill against the float64 reference."""

import pytest
import torch

import torch_flashinfer_ops as flashinfer

try:
    from . import reference as ref
except ImportError:
    import reference as ref

F16, BF16 = torch.float16, torch.bfloat16
DTYPES = [F16, BF16]
# (num_qo_heads, num_kv_heads): GQA ratios 1, 4, 8 and MQA
HEADS = [(4, 4), (8, 2), (16, 2), (8, 1)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(20240814)


@pytest.fixture
def workspace():
    return torch.empty(32 * 1024 * 1024, dtype=torch.uint8)


def _randn(*shape, dtype):
    return torch.randn(*shape, dtype=dtype)


# ---------------------------------------------------------------------------
# single prefill
# ---------------------------------------------------------------------------

# (qo_len, kv_len, causal); causal only with qo_len <= kv_len
SINGLE_CASES = [
    (1, 1, False),
    (1, 1, True),
    (7, 7, True),
    (5, 29, False),
    (5, 29, True),
    (31, 31, False),
    (31, 31, True),
    (33, 17, False),
    (16, 80, True),
]


def _single_check(q, k, v, kv_layout, dtype, ref_kwargs, **kwargs):
    """Run single prefill with and without lse; compare both to the reference."""
    k_in, v_in = ref.to_layout(k, kv_layout), ref.to_layout(v, kv_layout)
    r_out, r_lse = ref.attention_ref(q, k, v, **ref_kwargs)
    out = flashinfer.single_prefill_with_kv_cache(q, k_in, v_in, kv_layout=kv_layout, **kwargs)
    assert isinstance(out, torch.Tensor)
    ref.assert_attention_close(out, r_out, dtype, "out:")
    out2, lse = flashinfer.single_prefill_with_kv_cache(
        q, k_in, v_in, kv_layout=kv_layout, return_lse=True, **kwargs
    )
    ref.assert_attention_close(out2, r_out, dtype, "out(return_lse):")
    ref.assert_lse_close(lse, r_lse, "lse:")


@pytest.mark.parametrize("qo_len,kv_len,causal", SINGLE_CASES)
@pytest.mark.parametrize("hq,hkv", HEADS)
@pytest.mark.parametrize("kv_layout", ["NHD", "HND"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_single_prefill(qo_len, kv_len, causal, hq, hkv, kv_layout, dtype):
    d = 64
    q = _randn(qo_len, hq, d, dtype=dtype)
    k = _randn(kv_len, hkv, d, dtype=dtype)
    v = _randn(kv_len, hkv, d, dtype=dtype)
    _single_check(q, k, v, kv_layout, dtype, dict(causal=causal), causal=causal)


@pytest.mark.parametrize("head_dim", [128, 256])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_single_prefill_head_dims(head_dim, causal, dtype):
    q = _randn(13, 8, head_dim, dtype=dtype)
    k = _randn(37, 2, head_dim, dtype=dtype)
    v = _randn(37, 2, head_dim, dtype=dtype)
    _single_check(q, k, v, "NHD", dtype, dict(causal=causal), causal=causal)


# (sm_scale, logits_soft_cap, window_left)
OPTIONS = [
    (0.3, None, -1),
    (None, 2.0, -1),
    (1.0, 5.0, -1),
    (None, None, 0),
    (None, None, 4),
    (None, None, 20),
    (0.5, 3.0, 6),
]


@pytest.mark.parametrize("sm_scale,logits_soft_cap,window_left", OPTIONS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_layout", ["NHD", "HND"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_single_prefill_options(sm_scale, logits_soft_cap, window_left, causal, kv_layout, dtype):
    qo_len, kv_len, hq, hkv, d = 19, 45, 8, 2, 64
    q = _randn(qo_len, hq, d, dtype=dtype)
    k = _randn(kv_len, hkv, d, dtype=dtype)
    v = _randn(kv_len, hkv, d, dtype=dtype)
    opts = dict(sm_scale=sm_scale, logits_soft_cap=logits_soft_cap, window_left=window_left)
    _single_check(q, k, v, kv_layout, dtype, dict(causal=causal, **opts), causal=causal, **opts)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("qo_len,kv_len", [(1, 9), (13, 13), (11, 40), (24, 7)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_single_prefill_custom_mask(packed, qo_len, kv_len, dtype):
    hq, hkv, d = 8, 2, 64
    q = _randn(qo_len, hq, d, dtype=dtype)
    k = _randn(kv_len, hkv, d, dtype=dtype)
    v = _randn(kv_len, hkv, d, dtype=dtype)
    mask = ref.random_mask(qo_len, kv_len)
    mask[0, :] = False  # a row that sees nothing: output 0, lse -inf
    if qo_len > 2:
        mask[1, :] = True
    r_out, r_lse = ref.attention_ref(q, k, v, custom_mask=mask)
    assert torch.isinf(r_lse[0]).all()
    kw = dict(packed_custom_mask=ref.packbits_little(mask)) if packed else dict(custom_mask=mask)
    out, lse = flashinfer.single_prefill_with_kv_cache(q, k, v, return_lse=True, **kw)
    ref.assert_attention_close(out, r_out, dtype)
    ref.assert_lse_close(lse, r_lse)


def test_single_prefill_custom_mask_overrides_causal():
    # FlashInfer: causal only takes effect when no custom mask is given.
    qo_len, kv_len, hq, hkv, d, dtype = 9, 21, 4, 4, 64, F16
    q = _randn(qo_len, hq, d, dtype=dtype)
    k = _randn(kv_len, hkv, d, dtype=dtype)
    v = _randn(kv_len, hkv, d, dtype=dtype)
    mask = ref.random_mask(qo_len, kv_len)
    mask[:, -1] = True  # positions that causal would hide for early rows
    r_out, _ = ref.attention_ref(q, k, v, custom_mask=mask)
    out = flashinfer.single_prefill_with_kv_cache(q, k, v, custom_mask=mask, causal=True)
    ref.assert_attention_close(out, r_out, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_prefill_tril_mask_equals_causal(dtype):
    qo_len, kv_len, hq, hkv, d = 17, 50, 8, 2, 64
    q = _randn(qo_len, hq, d, dtype=dtype)
    k = _randn(kv_len, hkv, d, dtype=dtype)
    v = _randn(kv_len, hkv, d, dtype=dtype)
    mask = torch.tril(torch.ones(qo_len, kv_len, dtype=torch.bool), diagonal=kv_len - qo_len)
    o_causal = flashinfer.single_prefill_with_kv_cache(q, k, v, causal=True)
    o_mask = flashinfer.single_prefill_with_kv_cache(q, k, v, custom_mask=mask)
    r_out, _ = ref.attention_ref(q, k, v, causal=True)
    ref.assert_attention_close(o_causal, r_out, dtype)
    ref.assert_attention_close(o_mask, r_out, dtype)


@pytest.mark.parametrize("causal,dtype", [(True, F16), (False, BF16)])
def test_single_prefill_long(causal, dtype):
    # several KV blocks per query tile: exercises the blockwise online softmax
    qo_len, kv_len, hq, hkv, d = 512, 2048, 4, 2, 128
    q = _randn(qo_len, hq, d, dtype=dtype)
    k = _randn(kv_len, hkv, d, dtype=dtype)
    v = _randn(kv_len, hkv, d, dtype=dtype)
    r_out, r_lse = ref.attention_ref(q, k, v, causal=causal)
    out, lse = flashinfer.single_prefill_with_kv_cache(q, k, v, causal=causal, return_lse=True)
    ref.assert_attention_close(out, r_out, dtype)
    ref.assert_lse_close(lse, r_lse)


@pytest.mark.parametrize("causal", [False, True])
def test_single_prefill_backend_fa2(causal):
    dtype = F16
    q = _randn(20, 8, 64, dtype=dtype)
    k = _randn(33, 2, 64, dtype=dtype)
    v = _randn(33, 2, 64, dtype=dtype)
    r_out, r_lse = ref.attention_ref(q, k, v, causal=causal)
    out, lse = flashinfer.single_prefill_with_kv_cache(
        q, k, v, causal=causal, backend="fa2", return_lse=True
    )
    ref.assert_attention_close(out, r_out, dtype)
    ref.assert_lse_close(lse, r_lse)


def test_single_prefill_return_lse_partial():
    # module-level alias kept from upstream
    fn = getattr(flashinfer, "single_prefill_with_kv_cache_return_lse", None)
    if fn is None:
        fn = flashinfer.prefill.single_prefill_with_kv_cache_return_lse
    q = _randn(6, 4, 64, dtype=F16)
    k = _randn(10, 4, 64, dtype=F16)
    v = _randn(10, 4, 64, dtype=F16)
    out, lse = fn(q, k, v)
    r_out, r_lse = ref.attention_ref(q, k, v)
    ref.assert_attention_close(out, r_out, F16)
    ref.assert_lse_close(lse, r_lse)


# ---------------------------------------------------------------------------
# batch prefill: shared helpers
# ---------------------------------------------------------------------------

# per-request (qo_len, kv_len), qo_len <= kv_len so every set also runs causal
REQS = {
    "one": [(12, 37)],
    "mixed": [(1, 1), (5, 40), (17, 17), (3, 70), (9, 33)],
    "single_tokens": [(1, 1), (1, 16), (1, 33)],
}


def _make_batch(reqs, hq, hkv, d, dtype, kv_dtype=None):
    kv_dtype = kv_dtype or dtype
    qo_lens = [r[0] for r in reqs]
    kv_lens = [r[1] for r in reqs]
    q = _randn(sum(qo_lens), hq, d, dtype=dtype)
    ks = [_randn(n, hkv, d, dtype=kv_dtype) for n in kv_lens]
    vs = [_randn(n, hkv, d, dtype=kv_dtype) for n in kv_lens]
    return q, ks, vs, ref.indptr_from_lens(qo_lens)


def _batch_ref(q, ks, vs, qo_indptr, masks=None, **kw):
    outs, lses = [], []
    for b in range(len(ks)):
        s, e = int(qo_indptr[b]), int(qo_indptr[b + 1])
        o, l = ref.attention_ref(
            q[s:e], ks[b], vs[b], custom_mask=None if masks is None else masks[b], **kw
        )
        outs.append(o)
        lses.append(l)
    return torch.cat(outs), torch.cat(lses)


def _run_checked(wrapper, q, kv_args, dtype, r_out, r_lse):
    """run() without and with preallocated NaN-poisoned out/lse."""
    o_plain = wrapper.run(q, *kv_args)
    assert isinstance(o_plain, torch.Tensor)
    ref.assert_attention_close(o_plain, r_out, dtype, "run:")
    out = ref.nan_like(r_out.shape, dtype)
    lse = ref.nan_like(r_lse.shape, torch.float32)
    o, l = wrapper.run(q, *kv_args, out=out, lse=lse, return_lse=True)
    assert o is out, "run(out=...) must return the provided out tensor"
    assert l is lse, "run(lse=...) must return the provided lse tensor"
    ref.assert_attention_close(out, r_out, dtype, "run(out=):")
    ref.assert_lse_close(lse, r_lse, "run(lse=):")


def _plan_paged(wrapper, qo_indptr, P, hq, hkv, d, dtype, **kw):
    wrapper.plan(
        qo_indptr,
        P.indptr,
        P.indices,
        P.last_page_len,
        hq,
        hkv,
        d,
        P.page_size,
        q_data_type=dtype,
        kv_data_type=dtype,
        **kw,
    )


# ---------------------------------------------------------------------------
# batch prefill, paged
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("reqs", list(REQS), ids=list(REQS))
@pytest.mark.parametrize("page_size", [1, 16, 32])
@pytest.mark.parametrize("kv_layout", ["NHD", "HND"])
@pytest.mark.parametrize("single_tensor", [True, False], ids=["kv5d", "kvtuple"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_prefill_paged(workspace, reqs, page_size, kv_layout, single_tensor, causal, dtype):
    hq, hkv, d = 8, 2, 64
    q, ks, vs, qo_indptr = _make_batch(REQS[reqs], hq, hkv, d, dtype)
    P = ref.build_paged_kv(ks, vs, page_size, kv_layout, single_tensor)
    r_out, r_lse = _batch_ref(q, ks, vs, qo_indptr, causal=causal)
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, kv_layout)
    _plan_paged(w, qo_indptr, P, hq, hkv, d, dtype, causal=causal)
    _run_checked(w, q, (P.cache,), dtype, r_out, r_lse)


@pytest.mark.parametrize("hq,hkv", [(4, 4), (16, 2), (8, 1)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_batch_prefill_paged_heads(workspace, hq, hkv, causal, head_dim):
    dtype = F16
    q, ks, vs, qo_indptr = _make_batch(REQS["mixed"], hq, hkv, head_dim, dtype)
    P = ref.build_paged_kv(ks, vs, 16, "NHD", True)
    r_out, r_lse = _batch_ref(q, ks, vs, qo_indptr, causal=causal)
    w = flashinfer.prefill.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
    _plan_paged(w, qo_indptr, P, hq, hkv, head_dim, dtype, causal=causal)
    _run_checked(w, q, (P.cache,), dtype, r_out, r_lse)


def test_batch_prefill_paged_qo_longer_than_kv(workspace):
    # non-causal requests with more queries than keys
    dtype = F16
    reqs = [(20, 7), (3, 1), (9, 40)]
    q, ks, vs, qo_indptr = _make_batch(reqs, 8, 2, 64, dtype)
    P = ref.build_paged_kv(ks, vs, 16, "NHD", True)
    r_out, r_lse = _batch_ref(q, ks, vs, qo_indptr)
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
    _plan_paged(w, qo_indptr, P, 8, 2, 64, dtype)
    _run_checked(w, q, (P.cache,), dtype, r_out, r_lse)


@pytest.mark.parametrize("sm_scale,logits_soft_cap,window_left", OPTIONS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_prefill_paged_options(workspace, sm_scale, logits_soft_cap, window_left, causal, dtype):
    hq, hkv, d = 8, 2, 64
    q, ks, vs, qo_indptr = _make_batch(REQS["mixed"], hq, hkv, d, dtype)
    P = ref.build_paged_kv(ks, vs, 16, "HND", False)
    opts = dict(sm_scale=sm_scale, logits_soft_cap=logits_soft_cap, window_left=window_left)
    r_out, r_lse = _batch_ref(q, ks, vs, qo_indptr, causal=causal, **opts)
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "HND")
    _plan_paged(w, qo_indptr, P, hq, hkv, d, dtype, causal=causal, **opts)
    _run_checked(w, q, (P.cache,), dtype, r_out, r_lse)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_prefill_paged_custom_mask(workspace, packed, page_size, dtype):
    hq, hkv, d = 8, 2, 64
    reqs = [(5, 40), (1, 1), (17, 17), (6, 23)]
    q, ks, vs, qo_indptr = _make_batch(reqs, hq, hkv, d, dtype)
    masks = [ref.random_mask(qo, kv) for qo, kv in reqs]
    masks[0][2, :] = False  # a row that sees nothing
    masks[1][:] = True
    P = ref.build_paged_kv(ks, vs, page_size, "NHD", True)
    r_out, r_lse = _batch_ref(q, ks, vs, qo_indptr, masks=masks)
    if packed:
        kw = dict(packed_custom_mask=ref.segment_packbits_little(masks))
    else:
        kw = dict(custom_mask=torch.cat([m.reshape(-1) for m in masks]))
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
    _plan_paged(w, qo_indptr, P, hq, hkv, d, dtype, **kw)
    _run_checked(w, q, (P.cache,), dtype, r_out, r_lse)


def test_batch_prefill_paged_padding_never_read(workspace):
    # unused slots of partly filled last pages and unused pages hold NaN
    dtype = F16
    reqs = [(3, 5), (7, 19), (1, 1), (4, 33)]
    q, ks, vs, qo_indptr = _make_batch(reqs, 8, 2, 64, dtype)
    P = ref.build_paged_kv(ks, vs, 16, "NHD", True, pad_fill=float("nan"))
    r_out, r_lse = _batch_ref(q, ks, vs, qo_indptr, causal=True)
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
    _plan_paged(w, qo_indptr, P, 8, 2, 64, dtype, causal=True)
    _run_checked(w, q, (P.cache,), dtype, r_out, r_lse)


@pytest.mark.parametrize("causal", [False, True])
def test_batch_prefill_paged_aliases(workspace, causal):
    dtype = BF16
    hq, hkv, d = 8, 2, 64
    q, ks, vs, qo_indptr = _make_batch(REQS["mixed"], hq, hkv, d, dtype)
    P = ref.build_paged_kv(ks, vs, 16, "NHD", False)
    r_out, r_lse = _batch_ref(q, ks, vs, qo_indptr, causal=causal)
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
    w.begin_forward(
        qo_indptr, P.indptr, P.indices, P.last_page_len, hq, hkv, d, 16,
        causal=causal, q_data_type=dtype,
    )
    o, l = w.run_return_lse(q, P.cache)
    ref.assert_attention_close(o, r_out, dtype, "run_return_lse:")
    ref.assert_lse_close(l, r_lse, "run_return_lse:")
    o = w.forward(q, P.cache, causal=causal)
    ref.assert_attention_close(o, r_out, dtype, "forward:")
    o, l = w.forward_return_lse(q, P.cache, causal=causal)
    ref.assert_attention_close(o, r_out, dtype, "forward_return_lse:")
    ref.assert_lse_close(l, r_lse, "forward_return_lse:")
    w.end_forward()


def test_batch_prefill_paged_replan(workspace):
    # the same wrapper re-planned for different batch compositions and page sizes
    dtype = F16
    hq, hkv, d = 8, 2, 64
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
    for reqs, page_size in [(REQS["mixed"], 16), ([(2, 2), (30, 64)], 32), (REQS["one"], 1)]:
        q, ks, vs, qo_indptr = _make_batch(reqs, hq, hkv, d, dtype)
        P = ref.build_paged_kv(ks, vs, page_size, "NHD", True)
        _plan_paged(w, qo_indptr, P, hq, hkv, d, dtype, causal=True)
        r_out, r_lse = _batch_ref(q, ks, vs, qo_indptr, causal=True)
        _run_checked(w, q, (P.cache,), dtype, r_out, r_lse)


def test_batch_prefill_paged_one_plan_many_layers(workspace):
    dtype = F16
    hq, hkv, d, page_size = 4, 2, 64, 16
    reqs = REQS["mixed"]
    qo_lens, kv_lens = [r[0] for r in reqs], [r[1] for r in reqs]
    qo_indptr = ref.indptr_from_lens(qo_lens)
    indptr, indices, last, num_pages = ref.make_page_table(kv_lens, page_size)
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
    w.plan(qo_indptr, indptr, indices, last, hq, hkv, d, page_size, causal=True, q_data_type=dtype)
    for _layer in range(3):
        cache = torch.randn(num_pages, 2, page_size, hkv, d, dtype=dtype)
        q = _randn(sum(qo_lens), hq, d, dtype=dtype)
        kv = ref.gather_paged_kv(cache, indptr, indices, last, "NHD")
        r_out, r_lse = _batch_ref(q, [x[0] for x in kv], [x[1] for x in kv], qo_indptr, causal=True)
        _run_checked(w, q, (cache,), dtype, r_out, r_lse)


@pytest.mark.parametrize("causal", [False, True])
def test_batch_prefill_paged_backend_fa2(workspace, causal):
    dtype = F16
    q, ks, vs, qo_indptr = _make_batch(REQS["mixed"], 8, 2, 64, dtype)
    P = ref.build_paged_kv(ks, vs, 16, "NHD", True)
    r_out, r_lse = _batch_ref(q, ks, vs, qo_indptr, causal=causal)
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD", backend="fa2")
    _plan_paged(w, qo_indptr, P, 8, 2, 64, dtype, causal=causal)
    _run_checked(w, q, (P.cache,), dtype, r_out, r_lse)


# ---------------------------------------------------------------------------
# batch prefill, ragged
# ---------------------------------------------------------------------------


def _ragged_kv(ks, vs, kv_layout):
    k = torch.cat(ks)
    v = torch.cat(vs)
    return ref.to_layout(k, kv_layout), ref.to_layout(v, kv_layout)


@pytest.mark.parametrize("reqs", list(REQS), ids=list(REQS))
@pytest.mark.parametrize("kv_layout", ["NHD", "HND"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_prefill_ragged(workspace, reqs, kv_layout, causal, dtype):
    hq, hkv, d = 8, 2, 64
    q, ks, vs, qo_indptr = _make_batch(REQS[reqs], hq, hkv, d, dtype)
    kv_indptr = ref.indptr_from_lens([k.shape[0] for k in ks])
    k, v = _ragged_kv(ks, vs, kv_layout)
    r_out, r_lse = _batch_ref(q, ks, vs, qo_indptr, causal=causal)
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, kv_layout)
    w.plan(qo_indptr, kv_indptr, hq, hkv, d, causal=causal, q_data_type=dtype, kv_data_type=dtype)
    _run_checked(w, q, (k, v), dtype, r_out, r_lse)


@pytest.mark.parametrize("hq,hkv", HEADS)
@pytest.mark.parametrize("causal", [False, True])
def test_batch_prefill_ragged_heads(workspace, hq, hkv, causal):
    dtype = BF16
    reqs = [(1, 1), (8, 30), (20, 20), (2, 65)]
    q, ks, vs, qo_indptr = _make_batch(reqs, hq, hkv, 64, dtype)
    kv_indptr = ref.indptr_from_lens([k.shape[0] for k in ks])
    k, v = _ragged_kv(ks, vs, "NHD")
    r_out, r_lse = _batch_ref(q, ks, vs, qo_indptr, causal=causal)
    w = flashinfer.prefill.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD")
    w.plan(qo_indptr, kv_indptr, hq, hkv, 64, causal=causal, q_data_type=dtype)
    _run_checked(w, q, (k, v), dtype, r_out, r_lse)


@pytest.mark.parametrize("sm_scale,logits_soft_cap,window_left", OPTIONS)
@pytest.mark.parametrize("causal", [False, True])
def test_batch_prefill_ragged_options(workspace, sm_scale, logits_soft_cap, window_left, causal):
    dtype = F16
    hq, hkv, d = 8, 2, 64
    q, ks, vs, qo_indptr = _make_batch(REQS["mixed"], hq, hkv, d, dtype)
    kv_indptr = ref.indptr_from_lens([k.shape[0] for k in ks])
    k, v = _ragged_kv(ks, vs, "NHD")
    opts = dict(sm_scale=sm_scale, logits_soft_cap=logits_soft_cap, window_left=window_left)
    r_out, r_lse = _batch_ref(q, ks, vs, qo_indptr, causal=causal, **opts)
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD")
    w.plan(qo_indptr, kv_indptr, hq, hkv, d, causal=causal, q_data_type=dtype, **opts)
    _run_checked(w, q, (k, v), dtype, r_out, r_lse)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_prefill_ragged_custom_mask(workspace, packed, dtype):
    hq, hkv, d = 8, 2, 64
    reqs = [(5, 40), (1, 1), (17, 17), (6, 23)]
    q, ks, vs, qo_indptr = _make_batch(reqs, hq, hkv, d, dtype)
    kv_indptr = ref.indptr_from_lens([r[1] for r in reqs])
    k, v = _ragged_kv(ks, vs, "NHD")
    masks = [ref.random_mask(qo, kv) for qo, kv in reqs]
    masks[2][0, :] = False  # a row that sees nothing
    masks[1][:] = True
    r_out, r_lse = _batch_ref(q, ks, vs, qo_indptr, masks=masks)
    if packed:
        kw = dict(packed_custom_mask=ref.segment_packbits_little(masks))
    else:
        kw = dict(custom_mask=torch.cat([m.reshape(-1) for m in masks]))
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD")
    w.plan(qo_indptr, kv_indptr, hq, hkv, d, q_data_type=dtype, **kw)
    _run_checked(w, q, (k, v), dtype, r_out, r_lse)


@pytest.mark.parametrize("causal", [False, True])
def test_batch_prefill_ragged_aliases(workspace, causal):
    dtype = F16
    hq, hkv, d = 4, 1, 64
    q, ks, vs, qo_indptr = _make_batch(REQS["mixed"], hq, hkv, d, dtype)
    kv_indptr = ref.indptr_from_lens([k.shape[0] for k in ks])
    k, v = _ragged_kv(ks, vs, "NHD")
    r_out, r_lse = _batch_ref(q, ks, vs, qo_indptr, causal=causal)
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD")
    w.begin_forward(qo_indptr, kv_indptr, hq, hkv, d, causal=causal, q_data_type=dtype)
    o, l = w.run_return_lse(q, k, v)
    ref.assert_attention_close(o, r_out, dtype, "run_return_lse:")
    ref.assert_lse_close(l, r_lse, "run_return_lse:")
    o = w.forward(q, k, v, causal=causal)
    ref.assert_attention_close(o, r_out, dtype, "forward:")
    o, l = w.forward_return_lse(q, k, v, causal=causal)
    ref.assert_attention_close(o, r_out, dtype, "forward_return_lse:")
    ref.assert_lse_close(l, r_lse, "forward_return_lse:")
    w.end_forward()


def test_batch_prefill_ragged_backend_fa2(workspace):
    dtype = BF16
    q, ks, vs, qo_indptr = _make_batch(REQS["mixed"], 8, 2, 64, dtype)
    kv_indptr = ref.indptr_from_lens([k.shape[0] for k in ks])
    k, v = _ragged_kv(ks, vs, "NHD")
    r_out, r_lse = _batch_ref(q, ks, vs, qo_indptr, causal=True)
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD", backend="fa2")
    w.plan(qo_indptr, kv_indptr, 8, 2, 64, causal=True, q_data_type=dtype)
    _run_checked(w, q, (k, v), dtype, r_out, r_lse)


def test_batch_prefill_ragged_matches_single(workspace):
    # a batch of one equals single prefill on the same tensors
    dtype = F16
    q = _randn(40, 8, 64, dtype=dtype)
    k = _randn(100, 2, 64, dtype=dtype)
    v = _randn(100, 2, 64, dtype=dtype)
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD")
    w.plan(torch.tensor([0, 40], dtype=torch.int32), torch.tensor([0, 100], dtype=torch.int32),
           8, 2, 64, causal=True, q_data_type=dtype)
    o_batch = w.run(q, k, v)
    r_out, _ = ref.attention_ref(q, k, v, causal=True)
    ref.assert_attention_close(o_batch, r_out, dtype)
    o_single = flashinfer.single_prefill_with_kv_cache(q, k, v, causal=True)
    ref.assert_attention_close(o_single, r_out, dtype)
