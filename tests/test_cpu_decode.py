"""CPU tier: single decode and BatchDecodeWithPagedKVCacheWrapper against the float64 reference."""

import pytest
import torch

import torch_flashinfer_ops as flashinfer

try:
    from . import reference as ref
except ImportError:
    import reference as ref

F16, BF16 = torch.float16, torch.bfloat16
E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
DTYPES = [F16, BF16]
# (num_qo_heads, num_kv_heads): GQA ratios 1, 4, 8 and MQA
HEADS = [(4, 4), (8, 2), (16, 2), (8, 1)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(7)


@pytest.fixture
def workspace():
    return torch.empty(32 * 1024 * 1024, dtype=torch.uint8)


def _kv(n, hkv, d, kv_dtype):
    """Random K or V of the given dtype (fp8 made from fp32 randn)."""
    if kv_dtype in (E4M3, E5M2):
        return torch.randn(n, hkv, d).to(kv_dtype)
    return torch.randn(n, hkv, d, dtype=kv_dtype)


# ---------------------------------------------------------------------------
# single decode
# ---------------------------------------------------------------------------


def _single_decode_check(q, k, v, kv_layout, dtype, ref_kwargs, k_scale=None, v_scale=None, **kwargs):
    kd = ref.dequant(k, k_scale)
    vd = ref.dequant(v, v_scale)
    r_out, r_lse = ref.decode_ref(q, kd, vd, **ref_kwargs)
    k_in, v_in = ref.to_layout(k, kv_layout), ref.to_layout(v, kv_layout)
    if k_scale is not None:
        kwargs["k_scale"] = k_scale
    if v_scale is not None:
        kwargs["v_scale"] = v_scale
    out = flashinfer.single_decode_with_kv_cache(q, k_in, v_in, kv_layout=kv_layout, **kwargs)
    assert isinstance(out, torch.Tensor)
    ref.assert_attention_close(out, r_out, dtype, "out:")
    out2, lse = flashinfer.single_decode_with_kv_cache(
        q, k_in, v_in, kv_layout=kv_layout, return_lse=True, **kwargs
    )
    ref.assert_attention_close(out2, r_out, dtype, "out(return_lse):")
    ref.assert_lse_close(lse, r_lse, "lse:")
    return out


@pytest.mark.parametrize("kv_len", [1, 7, 64, 515])
@pytest.mark.parametrize("hq,hkv", HEADS)
@pytest.mark.parametrize("kv_layout", ["NHD", "HND"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_tensor_cores", [False, True])
def test_single_decode(kv_len, hq, hkv, kv_layout, dtype, use_tensor_cores):
    d = 64
    q = torch.randn(hq, d, dtype=dtype)
    k = _kv(kv_len, hkv, d, dtype)
    v = _kv(kv_len, hkv, d, dtype)
    _single_decode_check(q, k, v, kv_layout, dtype, {}, use_tensor_cores=use_tensor_cores)


@pytest.mark.parametrize("head_dim", [128, 256])
@pytest.mark.parametrize("dtype", DTYPES)
def test_single_decode_head_dims(head_dim, dtype):
    q = torch.randn(8, head_dim, dtype=dtype)
    k = _kv(77, 2, head_dim, dtype)
    v = _kv(77, 2, head_dim, dtype)
    _single_decode_check(q, k, v, "NHD", dtype, {})


# (sm_scale, logits_soft_cap, window_left)
OPTIONS = [
    (0.3, None, -1),
    (None, 2.0, -1),
    (1.0, 5.0, -1),
    (None, None, 0),
    (None, None, 3),
    (None, None, 33),
    (0.5, 3.0, 10),
]


@pytest.mark.parametrize("sm_scale,logits_soft_cap,window_left", OPTIONS)
@pytest.mark.parametrize("kv_len", [1, 50])
@pytest.mark.parametrize("use_tensor_cores", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_single_decode_options(sm_scale, logits_soft_cap, window_left, kv_len, use_tensor_cores, dtype):
    hq, hkv, d = 8, 2, 64
    q = torch.randn(hq, d, dtype=dtype)
    k = _kv(kv_len, hkv, d, dtype)
    v = _kv(kv_len, hkv, d, dtype)
    opts = dict(sm_scale=sm_scale, logits_soft_cap=logits_soft_cap, window_left=window_left)
    _single_decode_check(q, k, v, "NHD", dtype, opts, use_tensor_cores=use_tensor_cores, **opts)


def test_single_decode_window_equals_slice():
    # window_left = w sees exactly the last w + 1 keys (upstream's own check)
    dtype, w = F16, 13
    q = torch.randn(8, 64, dtype=dtype)
    k = _kv(99, 4, 64, dtype)
    v = _kv(99, 4, 64, dtype)
    o = flashinfer.single_decode_with_kv_cache(q, k, v, window_left=w)
    o_slice = flashinfer.single_decode_with_kv_cache(q, k[-(w + 1):], v[-(w + 1):])
    r_out, _ = ref.decode_ref(q, k[-(w + 1):], v[-(w + 1):])
    ref.assert_attention_close(o, r_out, dtype)
    ref.assert_attention_close(o_slice, r_out, dtype)


@pytest.mark.parametrize("kv_dtype", [E4M3, E5M2])
@pytest.mark.parametrize("q_dtype", DTYPES)
@pytest.mark.parametrize("scales", [(None, None), (0.5, 2.0), (1.7, 0.25)])
@pytest.mark.parametrize("kv_layout", ["NHD", "HND"])
def test_single_decode_fp8(kv_dtype, q_dtype, scales, kv_layout):
    hq, hkv, d, kv_len = 8, 2, 64, 100
    k_scale, v_scale = scales
    q = torch.randn(hq, d, dtype=q_dtype)
    k = _kv(kv_len, hkv, d, kv_dtype)
    v = _kv(kv_len, hkv, d, kv_dtype)
    _single_decode_check(q, k, v, kv_layout, q_dtype, {}, k_scale=k_scale, v_scale=v_scale)


@pytest.mark.parametrize("hq,hkv", [(8, 8), (32, 4), (8, 1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_single_decode_tensor_cores_agree(hq, hkv, dtype):
    d, kv_len = 64, 300
    q = torch.randn(hq, d, dtype=dtype)
    k = _kv(kv_len, hkv, d, dtype)
    v = _kv(kv_len, hkv, d, dtype)
    r_out, r_lse = ref.decode_ref(q, k, v)
    o_a, l_a = flashinfer.single_decode_with_kv_cache(q, k, v, use_tensor_cores=False, return_lse=True)
    o_b, l_b = flashinfer.single_decode_with_kv_cache(q, k, v, use_tensor_cores=True, return_lse=True)
    ref.assert_attention_close(o_a, r_out, dtype)
    ref.assert_attention_close(o_b, r_out, dtype)
    ref.assert_lse_close(l_a, r_lse)
    ref.assert_lse_close(l_b, r_lse)
    tol = ref.ALLCLOSE_TOL[dtype]
    torch.testing.assert_close(o_a, o_b, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------
# batch decode
# ---------------------------------------------------------------------------

KV_LENS = {
    "one": [37],
    "mixed": [1, 16, 17, 100, 5, 64],
    "ones": [1, 1, 1],
}


def _batch_decode_case(kv_lens, hq, hkv, d, q_dtype, kv_dtype, page_size, kv_layout, single_tensor,
                       k_scale=None, v_scale=None, pad_fill=100.0, **ref_kwargs):
    q = torch.randn(len(kv_lens), hq, d, dtype=q_dtype)
    ks = [_kv(n, hkv, d, kv_dtype) for n in kv_lens]
    vs = [_kv(n, hkv, d, kv_dtype) for n in kv_lens]
    P = ref.build_paged_kv(ks, vs, page_size, kv_layout, single_tensor, pad_fill=pad_fill)
    outs, lses = [], []
    for b in range(len(kv_lens)):
        o, l = ref.decode_ref(q[b], ref.dequant(ks[b], k_scale), ref.dequant(vs[b], v_scale), **ref_kwargs)
        outs.append(o)
        lses.append(l)
    return q, P, torch.stack(outs), torch.stack(lses)


def _plan(w, P, hq, hkv, d, q_dtype, kv_dtype, **kw):
    w.plan(
        P.indptr,
        P.indices,
        P.last_page_len,
        hq,
        hkv,
        d,
        P.page_size,
        q_data_type=q_dtype,
        kv_data_type=kv_dtype,
        **kw,
    )


def _run_checked(w, q, cache, dtype, r_out, r_lse, **run_kw):
    o_plain = w.run(q, cache, **run_kw)
    assert isinstance(o_plain, torch.Tensor)
    ref.assert_attention_close(o_plain, r_out, dtype, "run:")
    out = ref.nan_like(r_out.shape, dtype)
    lse = ref.nan_like(r_lse.shape, torch.float32)
    o, l = w.run(q, cache, out=out, lse=lse, return_lse=True, **run_kw)
    assert o is out, "run(out=...) must return the provided out tensor"
    assert l is lse, "run(lse=...) must return the provided lse tensor"
    ref.assert_attention_close(out, r_out, dtype, "run(out=):")
    ref.assert_lse_close(lse, r_lse, "run(lse=):")
    return o_plain


@pytest.mark.parametrize("kv_lens", list(KV_LENS), ids=list(KV_LENS))
@pytest.mark.parametrize("page_size", [1, 16, 32])
@pytest.mark.parametrize("kv_layout", ["NHD", "HND"])
@pytest.mark.parametrize("single_tensor", [True, False], ids=["kv5d", "kvtuple"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_tensor_cores", [False, True])
def test_batch_decode(workspace, kv_lens, page_size, kv_layout, single_tensor, dtype, use_tensor_cores):
    hq, hkv, d = 8, 2, 64
    q, P, r_out, r_lse = _batch_decode_case(
        KV_LENS[kv_lens], hq, hkv, d, dtype, dtype, page_size, kv_layout, single_tensor
    )
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, kv_layout, use_tensor_cores=use_tensor_cores)
    assert w.use_tensor_cores == use_tensor_cores
    _plan(w, P, hq, hkv, d, dtype, dtype)
    _run_checked(w, q, P.cache, dtype, r_out, r_lse)


@pytest.mark.parametrize("hq,hkv", HEADS)
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("use_tensor_cores", [False, True])
def test_batch_decode_heads(workspace, hq, hkv, head_dim, use_tensor_cores):
    dtype = F16
    q, P, r_out, r_lse = _batch_decode_case(KV_LENS["mixed"], hq, hkv, head_dim, dtype, dtype, 16, "NHD", True)
    w = flashinfer.decode.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", use_tensor_cores=use_tensor_cores)
    _plan(w, P, hq, hkv, head_dim, dtype, dtype)
    _run_checked(w, q, P.cache, dtype, r_out, r_lse)


@pytest.mark.parametrize("sm_scale,logits_soft_cap,window_left", OPTIONS)
@pytest.mark.parametrize("use_tensor_cores", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_decode_options(workspace, sm_scale, logits_soft_cap, window_left, use_tensor_cores, dtype):
    hq, hkv, d = 8, 2, 64
    opts = dict(sm_scale=sm_scale, logits_soft_cap=logits_soft_cap, window_left=window_left)
    q, P, r_out, r_lse = _batch_decode_case(KV_LENS["mixed"], hq, hkv, d, dtype, dtype, 16, "HND", False, **opts)
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "HND", use_tensor_cores=use_tensor_cores)
    _plan(w, P, hq, hkv, d, dtype, dtype, **opts)
    _run_checked(w, q, P.cache, dtype, r_out, r_lse)


@pytest.mark.parametrize("kv_dtype", [E4M3, E5M2])
@pytest.mark.parametrize("q_dtype", DTYPES)
@pytest.mark.parametrize("scales", [(None, None), (0.5, 2.0), (1.7, 0.25)])
@pytest.mark.parametrize("page_size,kv_layout", [(1, "NHD"), (16, "HND"), (32, "NHD")])
@pytest.mark.parametrize("use_tensor_cores", [False, True])
def test_batch_decode_fp8(workspace, kv_dtype, q_dtype, scales, page_size, kv_layout, use_tensor_cores):
    hq, hkv, d = 8, 2, 64
    k_scale, v_scale = scales
    q, P, r_out, r_lse = _batch_decode_case(
        KV_LENS["mixed"], hq, hkv, d, q_dtype, kv_dtype, page_size, kv_layout, True,
        k_scale=k_scale, v_scale=v_scale,
    )
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, kv_layout, use_tensor_cores=use_tensor_cores)
    _plan(w, P, hq, hkv, d, q_dtype, kv_dtype)
    run_kw = {}
    if k_scale is not None:
        run_kw["k_scale"] = k_scale
    if v_scale is not None:
        run_kw["v_scale"] = v_scale
    _run_checked(w, q, P.cache, q_dtype, r_out, r_lse, **run_kw)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_decode_tensor_cores_agree(workspace, dtype):
    hq, hkv, d = 16, 2, 64
    q, P, r_out, r_lse = _batch_decode_case(KV_LENS["mixed"], hq, hkv, d, dtype, dtype, 16, "NHD", True)
    outs = []
    for tc in (False, True):
        w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", use_tensor_cores=tc)
        _plan(w, P, hq, hkv, d, dtype, dtype)
        outs.append(_run_checked(w, q, P.cache, dtype, r_out, r_lse))
    tol = ref.ALLCLOSE_TOL[dtype]
    torch.testing.assert_close(outs[0], outs[1], rtol=tol, atol=tol)


@pytest.mark.parametrize("use_tensor_cores", [False, True])
def test_batch_decode_padding_never_read(workspace, use_tensor_cores):
    # unused slots of partly filled last pages and unused pages hold NaN
    dtype = F16
    q, P, r_out, r_lse = _batch_decode_case(
        [3, 17, 1, 40], 8, 2, 64, dtype, dtype, 16, "NHD", True, pad_fill=float("nan")
    )
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", use_tensor_cores=use_tensor_cores)
    _plan(w, P, 8, 2, 64, dtype, dtype)
    _run_checked(w, q, P.cache, dtype, r_out, r_lse)


def test_batch_decode_run_window_left(workspace):
    # run(window_left=...) accepted as in upstream 0.2.14 (it must equal the planned value)
    dtype = F16
    hq, hkv, d, w_left = 8, 2, 64, 9
    q, P, r_out, r_lse = _batch_decode_case(KV_LENS["mixed"], hq, hkv, d, dtype, dtype, 16, "NHD", True,
                                            window_left=w_left)
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
    _plan(w, P, hq, hkv, d, dtype, dtype, window_left=w_left)
    _run_checked(w, q, P.cache, dtype, r_out, r_lse, window_left=w_left)


@pytest.mark.parametrize("use_tensor_cores", [False, True])
def test_batch_decode_aliases(workspace, use_tensor_cores):
    dtype = BF16
    hq, hkv, d = 8, 1, 64
    q, P, r_out, r_lse = _batch_decode_case(KV_LENS["mixed"], hq, hkv, d, dtype, dtype, 16, "NHD", False)
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", use_tensor_cores=use_tensor_cores)
    w.begin_forward(P.indptr, P.indices, P.last_page_len, hq, hkv, d, 16, q_data_type=dtype, kv_data_type=dtype)
    o, l = w.run_return_lse(q, P.cache)
    ref.assert_attention_close(o, r_out, dtype, "run_return_lse:")
    ref.assert_lse_close(l, r_lse, "run_return_lse:")
    o = w.forward(q, P.cache)
    ref.assert_attention_close(o, r_out, dtype, "forward:")
    o, l = w.forward_return_lse(q, P.cache)
    ref.assert_attention_close(o, r_out, dtype, "forward_return_lse:")
    ref.assert_lse_close(l, r_lse, "forward_return_lse:")
    w.end_forward()


def test_batch_decode_one_plan_many_layers(workspace):
    dtype = F16
    hq, hkv, d, page_size = 8, 2, 64, 16
    kv_lens = KV_LENS["mixed"]
    indptr, indices, last, num_pages = ref.make_page_table(kv_lens, page_size)
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
    w.plan(indptr, indices, last, hq, hkv, d, page_size, q_data_type=dtype)
    for _layer in range(3):
        cache = torch.randn(num_pages, 2, page_size, hkv, d, dtype=dtype)
        q = torch.randn(len(kv_lens), hq, d, dtype=dtype)
        kv = ref.gather_paged_kv(cache, indptr, indices, last, "NHD")
        r = [ref.decode_ref(q[b], kv[b][0], kv[b][1]) for b in range(len(kv_lens))]
        r_out = torch.stack([x[0] for x in r])
        r_lse = torch.stack([x[1] for x in r])
        _run_checked(w, q, cache, dtype, r_out, r_lse)


def test_batch_decode_replan(workspace):
    dtype = F16
    hq, hkv, d = 8, 2, 64
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
    for kv_lens, page_size in [(KV_LENS["mixed"], 16), ([300, 2], 32), (KV_LENS["one"], 1)]:
        q, P, r_out, r_lse = _batch_decode_case(kv_lens, hq, hkv, d, dtype, dtype, page_size, "NHD", True)
        _plan(w, P, hq, hkv, d, dtype, dtype)
        _run_checked(w, q, P.cache, dtype, r_out, r_lse)


def test_batch_decode_plan_items_carry_kv_lengths_and_page_offsets(workspace):
    """Each item of the decode schedule carries its request's kv length and first page's place in
    kv_indices (plan_info.h: kKvLen, kPageBase), which the tensor-core decode kernel reads with
    the item instead of from the index arrays; plan_batch (no page table) marks the offset -1 so
    that a kernel reads kv_indptr itself. The items come right after the header, the requests'
    (partial_base, num_splits) after the items."""
    from plan_layout import KV_LEN, NUM_SPLITS, PAGE_BASE, PARTIAL_BASE, PARTIAL_ROW, REQUEST, items, requests

    kv_lens, hq, hkv, d = [1, 16, 17, 300, 5, 64], 8, 2, 64
    q, P, _, _ = _batch_decode_case(kv_lens, hq, hkv, d, F16, F16, 16, "NHD", True)
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
    _plan(w, P, hq, hkv, d, F16, F16)
    planned = items(w._workspace.plan_host)
    assert sorted(set(planned[:, REQUEST].tolist())) == list(range(len(kv_lens)))
    first_page = P.indptr[:-1].tolist()
    for item in planned.tolist():
        assert item[KV_LEN] == kv_lens[item[REQUEST]] and item[PAGE_BASE] == first_page[item[REQUEST]]

    schedule = torch.full((1 << 12,), 7, dtype=torch.int32)
    qo = torch.arange(len(kv_lens) + 1, dtype=torch.int32)
    flashinfer._ops.ops.plan_batch(qo, torch.tensor(kv_lens, dtype=torch.int32), schedule, 16, 128)
    batch_planned = items(schedule)
    assert batch_planned[:, KV_LEN].tolist() == [kv_lens[r] for r in batch_planned[:, REQUEST].tolist()]
    assert batch_planned[:, PAGE_BASE].tolist() == [-1] * len(batch_planned)
    split = requests(schedule)  # request 3 (300 rows) in 3 chunks of 128, the rest whole
    assert split[:, NUM_SPLITS].tolist() == [1, 1, 1, 3, 1, 1]
    assert split[3, PARTIAL_BASE] == 0 and (split[[0, 1, 2, 4, 5], PARTIAL_BASE] == -1).all()
    assert sorted(batch_planned[batch_planned[:, REQUEST] == 3][:, PARTIAL_ROW].tolist()) == [0, 1, 2]

    with pytest.raises(RuntimeError, match="page_indptr must have"):
        flashinfer._C.plan_host(torch.empty(0, dtype=torch.int32), torch.tensor(kv_lens, dtype=torch.int32),
                                schedule, 16, hkv, 4, 0, -1, False, 0, False, -1, torch.zeros(3, dtype=torch.int32))


def test_batch_decode_backend_fa2(workspace):
    dtype = F16
    q, P, r_out, r_lse = _batch_decode_case(KV_LENS["mixed"], 8, 2, 64, dtype, dtype, 16, "NHD", True)
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", backend="fa2")
    _plan(w, P, 8, 2, 64, dtype, dtype)
    _run_checked(w, q, P.cache, dtype, r_out, r_lse)


def test_batch_decode_long_kv(workspace):
    # long sequences: several KV chunks per request
    dtype = F16
    hq, hkv, d = 8, 2, 128
    q, P, r_out, r_lse = _batch_decode_case([2048, 1500, 3], hq, hkv, d, dtype, dtype, 16, "NHD", True)
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
    _plan(w, P, hq, hkv, d, dtype, dtype)
    _run_checked(w, q, P.cache, dtype, r_out, r_lse)
