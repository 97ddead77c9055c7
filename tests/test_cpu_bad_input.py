"""CPU tier: bad input raises a clear error that names the offending argument."""

import pytest
import torch

import torch_flashinfer_ops as flashinfer

try:
    from . import reference as ref
except ImportError:
    import reference as ref

F16 = torch.float16
ERRS = (ValueError, RuntimeError, TypeError)
HQ, HKV, D, PAGE = 8, 2, 64, 16


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(99)


@pytest.fixture
def workspace():
    return torch.empty(32 * 1024 * 1024, dtype=torch.uint8)


def _qkv(qo_len=9, kv_len=20, hq=HQ, hkv=HKV, d=D, dtype=F16):
    return (
        torch.randn(qo_len, hq, d, dtype=dtype),
        torch.randn(kv_len, hkv, d, dtype=dtype),
        torch.randn(kv_len, hkv, d, dtype=dtype),
    )


def _paged(kv_lens=(5, 20, 33), page_size=PAGE, kv_layout="NHD"):
    ks = [torch.randn(n, HKV, D, dtype=F16) for n in kv_lens]
    vs = [torch.randn(n, HKV, D, dtype=F16) for n in kv_lens]
    return ref.build_paged_kv(ks, vs, page_size, kv_layout, True)


def _paged_prefill(workspace, P, qo_lens=(3, 4, 5), **kw):
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
    qo_indptr = ref.indptr_from_lens(qo_lens)
    w.plan(qo_indptr, P.indptr, P.indices, P.last_page_len, HQ, HKV, D, P.page_size, **kw)
    return w, qo_indptr


# ---------------------------------------------------------------------------
# dtype
# ---------------------------------------------------------------------------


def test_single_prefill_q_float32():
    q, k, v = _qkv()
    with pytest.raises(ERRS, match=r"\bq\b"):
        flashinfer.single_prefill_with_kv_cache(q.float(), k, v)


def test_single_prefill_kv_float32():
    q, k, v = _qkv()
    with pytest.raises(ERRS, match=r"\bk\b|\bv\b|kv"):
        flashinfer.single_prefill_with_kv_cache(q, k.float(), v.float())


def test_single_decode_q_float32():
    _, k, v = _qkv()
    with pytest.raises(ERRS, match=r"\bq\b"):
        flashinfer.single_decode_with_kv_cache(torch.randn(HQ, D), k, v)


def test_batch_prefill_q_dtype_differs_from_plan(workspace):
    P = _paged()
    w, qo_indptr = _paged_prefill(workspace, P, q_data_type=F16)
    q = torch.randn(int(qo_indptr[-1]), HQ, D)
    with pytest.raises(ERRS, match=r"\bq\b|q_data_type"):
        w.run(q, P.cache)


def test_batch_prefill_q_float32(workspace):
    P = _paged()
    q = torch.randn(12, HQ, D)
    with pytest.raises(ERRS, match=r"\bq\b|q_data_type"):
        w, _ = _paged_prefill(workspace, P, q_data_type=torch.float32)
        w.run(q, P.cache)


def test_batch_decode_q_float32(workspace):
    P = _paged()
    q = torch.randn(3, HQ, D)
    with pytest.raises(ERRS, match=r"\bq\b|q_data_type"):
        w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
        w.plan(P.indptr, P.indices, P.last_page_len, HQ, HKV, D, PAGE, q_data_type=torch.float32)
        w.run(q, P.cache)


# ---------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------


def test_single_prefill_heads_not_divisible():
    q, k, v = _qkv(hq=6, hkv=4)
    with pytest.raises(ERRS, match=r"(?i)head"):
        flashinfer.single_prefill_with_kv_cache(q, k, v)


def test_single_decode_heads_not_divisible():
    _, k, v = _qkv(hkv=4)
    with pytest.raises(ERRS, match=r"(?i)head"):
        flashinfer.single_decode_with_kv_cache(torch.randn(6, D, dtype=F16), k, v)


def test_plan_heads_not_divisible(workspace):
    P = _paged()
    with pytest.raises(ERRS, match=r"num_qo_heads|num_kv_heads"):
        w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
        w.plan(ref.indptr_from_lens([3, 4, 5]), P.indptr, P.indices, P.last_page_len, 6, 4, D, PAGE)
    with pytest.raises(ERRS, match=r"num_qo_heads|num_kv_heads"):
        w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
        w.plan(P.indptr, P.indices, P.last_page_len, 6, 4, D, PAGE)
    with pytest.raises(ERRS, match=r"num_qo_heads|num_kv_heads"):
        w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD")
        w.plan(ref.indptr_from_lens([3, 4]), ref.indptr_from_lens([5, 6]), 6, 4, D)


def test_single_prefill_k_v_heads_differ():
    q, k, _ = _qkv(hkv=2)
    v = torch.randn(k.shape[0], 4, D, dtype=F16)
    with pytest.raises(ERRS, match=r"(?i)\bk\b|\bv\b|head"):
        flashinfer.single_prefill_with_kv_cache(q, k, v)


@pytest.mark.parametrize("fault", ["v dtype", "v float32", "k not a tensor", "shapes", "k stride"])
def test_single_k_v_faults_are_named(fault):
    """check_kv answers the common case in one expression; each fault still gets its own message."""
    q, k, v = _qkv()
    expected = {
        "v dtype": (ValueError, r"^k and v must share a dtype"),
        "v float32": (ValueError, r"^v must be float16, bfloat16 or float8"),
        "k not a tensor": (TypeError, r"^k must be a torch.Tensor"),
        "shapes": (ValueError, r"^k and v must have the same shape"),
        "k stride": (ValueError, r"^k must be contiguous in its last dimension"),
    }[fault]
    if fault == "v dtype":
        v = v.to(torch.bfloat16)
    elif fault == "v float32":
        v = v.float()
    elif fault == "k not a tensor":
        k = k.numpy()
    elif fault == "shapes":
        v = v[:-1]
    else:
        k = torch.randn(k.shape[0], HKV, 2 * D, dtype=F16)[..., ::2]
    with pytest.raises(expected[0], match=expected[1]):
        flashinfer.single_prefill_with_kv_cache(q, k, v)
    with pytest.raises(expected[0], match=expected[1]):
        flashinfer.single_decode_with_kv_cache(q[0], k, v)


@pytest.mark.parametrize("name", ["k", "v", "custom_mask"])
def test_single_prefill_tensor_on_another_device(name):
    q, k, v = _qkv()
    args = dict(k=k, v=v, custom_mask=None)
    args[name] = torch.empty(9, 20, dtype=torch.bool, device="meta") if name == "custom_mask" else \
        args[name].to("meta")
    with pytest.raises(ValueError, match=rf"^{name} is on meta but q is on cpu"):
        flashinfer.single_prefill_with_kv_cache(q, args["k"], args["v"], custom_mask=args["custom_mask"])
    if name != "custom_mask":
        with pytest.raises(ValueError, match=rf"^{name} is on meta but q is on cpu"):
            flashinfer.single_decode_with_kv_cache(q[0], args["k"], args["v"])


@pytest.mark.parametrize("arg, value", [("scale_q", 1.0), ("scale_k", 1.0), ("scale_v", 1.0), ("rope_scale", 1.0),
                                        ("rope_theta", 1e4), ("use_fp16_qk_reduction", True)])
def test_single_prefill_unserved_arguments(arg, value):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=rf"^{arg}=.* (is not served|not served)"):
        flashinfer.single_prefill_with_kv_cache(q, k, v, **{arg: value})
    if arg.startswith("rope"):
        with pytest.raises(ValueError, match=rf"^{arg}=.* is not served"):
            flashinfer.single_decode_with_kv_cache(q[0], k, v, **{arg: value})


def test_single_prefill_head_dim_mismatch():
    q, _, v = _qkv()
    k = torch.randn(v.shape[0], HKV, 128, dtype=F16)
    with pytest.raises(ERRS, match=r"(?i)head_dim|\bk\b|\bq\b"):
        flashinfer.single_prefill_with_kv_cache(q, k, v)


def test_single_decode_head_dim_mismatch():
    _, k, v = _qkv()
    with pytest.raises(ERRS, match=r"(?i)head_dim|\bk\b|\bq\b"):
        flashinfer.single_decode_with_kv_cache(torch.randn(HQ, 128, dtype=F16), k, v)


def test_batch_run_head_dim_differs_from_plan(workspace):
    P = _paged()
    w, qo_indptr = _paged_prefill(workspace, P)
    q = torch.randn(int(qo_indptr[-1]), HQ, 128, dtype=F16)
    with pytest.raises(ERRS, match=r"(?i)head_dim|\bq\b"):
        w.run(q, P.cache)


def test_single_prefill_q_last_dim_not_contiguous():
    _, k, v = _qkv()
    q = torch.randn(9, HQ, 2 * D, dtype=F16)[..., ::2]
    assert q.stride(-1) != 1
    with pytest.raises(ERRS, match=r"(?i)\bq\b|contiguous|stride"):
        flashinfer.single_prefill_with_kv_cache(q, k, v)


def test_single_decode_q_last_dim_not_contiguous():
    _, k, v = _qkv()
    q = torch.randn(HQ, 2 * D, dtype=F16)[:, ::2]
    with pytest.raises(ERRS, match=r"(?i)\bq\b|contiguous|stride"):
        flashinfer.single_decode_with_kv_cache(q, k, v)


def test_batch_prefill_q_last_dim_not_contiguous(workspace):
    P = _paged()
    w, qo_indptr = _paged_prefill(workspace, P)
    q = torch.randn(int(qo_indptr[-1]), HQ, 2 * D, dtype=F16)[..., ::2]
    with pytest.raises(ERRS, match=r"(?i)\bq\b|contiguous|stride"):
        w.run(q, P.cache)


def test_single_prefill_custom_mask_wrong_shape():
    q, k, v = _qkv()
    mask = torch.ones(q.shape[0], k.shape[0] + 1, dtype=torch.bool)
    with pytest.raises(ERRS, match=r"custom_mask"):
        flashinfer.single_prefill_with_kv_cache(q, k, v, custom_mask=mask)


def test_run_out_wrong_shape(workspace):
    P = _paged()
    w, qo_indptr = _paged_prefill(workspace, P)
    q = torch.randn(int(qo_indptr[-1]), HQ, D, dtype=F16)
    with pytest.raises(ERRS, match=r"\bout\b"):
        w.run(q, P.cache, out=torch.empty(int(qo_indptr[-1]) + 1, HQ, D, dtype=F16))


def test_run_lse_wrong_dtype(workspace):
    P = _paged()
    w, qo_indptr = _paged_prefill(workspace, P)
    q = torch.randn(int(qo_indptr[-1]), HQ, D, dtype=F16)
    with pytest.raises(ERRS, match=r"\blse\b"):
        w.run(q, P.cache, lse=torch.empty(int(qo_indptr[-1]), HQ, dtype=F16), return_lse=True)


def test_run_page_size_differs_from_plan(workspace):
    P = _paged(page_size=16)
    w, qo_indptr = _paged_prefill(workspace, P)
    q = torch.randn(int(qo_indptr[-1]), HQ, D, dtype=F16)
    cache32 = torch.randn(P.num_pages, 2, 32, HKV, D, dtype=F16)
    with pytest.raises(ERRS, match=r"page_size|page size"):
        w.run(q, cache32)


def _assert_enable_pdl_refused(run, op_with_pdl):
    """enable_pdl=True asks for programmatic dependent launch (NVIDIA sm_90+): on the CPU,
    run(True) raises a ValueError and the operator with enable_pdl its own error, not ignored;
    run(False) and run(None) give the same result."""
    with pytest.raises(ValueError, match=r"enable_pdl.*sm_90"):
        run(True)
    torch.testing.assert_close(run(False), run(None), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match=r"enable_pdl"):
        op_with_pdl()


def test_decode_enable_pdl_where_the_device_has_none(workspace):
    P = _paged()
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
    w.plan(P.indptr, P.indices, P.last_page_len, HQ, HKV, D, P.page_size)
    q = torch.randn(len(P.indptr) - 1, HQ, D, dtype=F16)
    plan = w._plan
    k, v = P.cache.unbind(1)
    _assert_enable_pdl_refused(
        lambda pdl: w.run(q, P.cache, enable_pdl=pdl),
        lambda: torch.ops.flashinfer.batch_decode_paged_run(
            q, k, v, P.indptr, P.indices, P.last_page_len, plan.plan_info, plan.partial_o, plan.partial_lse,
            plan.split_counters, torch.empty_like(q), None, 0, -1, D ** -0.5, 0.0, 1.0, 1.0, False, 0, True))


def test_paged_prefill_enable_pdl_where_the_device_has_none(workspace):
    P = _paged()
    w, qo_indptr = _paged_prefill(workspace, P, causal=True)
    q = torch.randn(int(qo_indptr[-1]), HQ, D, dtype=F16)
    plan = w._plan
    k, v = P.cache.unbind(1)
    _assert_enable_pdl_refused(
        lambda pdl: w.run(q, P.cache, enable_pdl=pdl),
        lambda: torch.ops.flashinfer.batch_prefill_paged_run(
            q, k, v, w._qo_indptr, w._kv_indptr, w._kv_indices, w._kv_last_page_len, plan.plan_info, plan.partial_o,
            plan.partial_lse, torch.empty_like(q), None, None, None, 0, True, -1, D ** -0.5, 0.0, 1.0, 1.0, True))


def test_ragged_prefill_enable_pdl_where_the_device_has_none(workspace):
    qo_lens, kv_lens = (3, 4, 5), (5, 20, 33)
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD")
    qo_indptr, kv_indptr = ref.indptr_from_lens(qo_lens), ref.indptr_from_lens(kv_lens)
    w.plan(qo_indptr, kv_indptr, HQ, HKV, D, causal=True)
    q, k, v = _qkv(sum(qo_lens), sum(kv_lens))
    plan = w._plan
    _assert_enable_pdl_refused(
        lambda pdl: w.run(q, k, v, enable_pdl=pdl),
        lambda: torch.ops.flashinfer.batch_prefill_ragged_run(
            q, k, v, w._qo_indptr, w._kv_indptr, plan.plan_info, plan.partial_o, plan.partial_lse,
            torch.empty_like(q), None, None, None, 0, True, -1, D ** -0.5, 0.0, 1.0, 1.0, True))


# ---------------------------------------------------------------------------
# index arrays
# ---------------------------------------------------------------------------


def test_paged_prefill_indptr_wrong_length(workspace):
    P = _paged()
    bad_indptr = torch.cat([P.indptr, P.indptr[-1:]])
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
    with pytest.raises(ERRS, match=r"indptr"):
        w.plan(ref.indptr_from_lens([3, 4, 5]), bad_indptr, P.indices, P.last_page_len, HQ, HKV, D, PAGE)


def test_decode_indptr_wrong_length(workspace):
    P = _paged()
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
    with pytest.raises(ERRS, match=r"indptr|last_page_len"):
        w.plan(P.indptr[:-1], P.indices, P.last_page_len, HQ, HKV, D, PAGE)


def test_ragged_indptr_wrong_length(workspace):
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD")
    with pytest.raises(ERRS, match=r"indptr"):
        w.plan(ref.indptr_from_lens([3, 4]), ref.indptr_from_lens([5, 6, 7]), HQ, HKV, D)


def test_paged_prefill_qo_indptr_not_monotonic(workspace):
    P = _paged()
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
    qo_indptr = torch.tensor([0, 5, 3, 8], dtype=torch.int32)
    with pytest.raises(ERRS, match=r"qo_indptr|indptr"):
        w.plan(qo_indptr, P.indptr, P.indices, P.last_page_len, HQ, HKV, D, PAGE)


def test_paged_prefill_kv_indptr_not_monotonic(workspace):
    P = _paged()
    bad = P.indptr.clone()
    bad[1], bad[2] = P.indptr[2], P.indptr[1]
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
    with pytest.raises(ERRS, match=r"indptr"):
        w.plan(ref.indptr_from_lens([3, 4, 5]), bad, P.indices, P.last_page_len, HQ, HKV, D, PAGE)


def test_decode_indptr_not_monotonic(workspace):
    P = _paged()
    bad = P.indptr.clone()
    bad[1], bad[2] = P.indptr[2], P.indptr[1]
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
    with pytest.raises(ERRS, match=r"indptr"):
        w.plan(bad, P.indices, P.last_page_len, HQ, HKV, D, PAGE)


def test_ragged_kv_indptr_not_monotonic(workspace):
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD")
    with pytest.raises(ERRS, match=r"indptr"):
        w.plan(ref.indptr_from_lens([3, 4, 2]), torch.tensor([0, 9, 4, 12], dtype=torch.int32), HQ, HKV, D)


def test_paged_prefill_page_id_out_of_range(workspace):
    P = _paged()
    indices = P.indices.clone()
    indices[-1] = P.num_pages + 5
    q = torch.randn(12, HQ, D, dtype=F16)
    with pytest.raises(ERRS, match=r"(?i)indices|page"):
        w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
        w.plan(ref.indptr_from_lens([3, 4, 5]), P.indptr, indices, P.last_page_len, HQ, HKV, D, PAGE)
        w.run(q, P.cache)


def test_decode_page_id_out_of_range(workspace):
    P = _paged()
    indices = P.indices.clone()
    indices[0] = P.num_pages
    q = torch.randn(3, HQ, D, dtype=F16)
    with pytest.raises(ERRS, match=r"(?i)indices|page"):
        w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
        w.plan(P.indptr, indices, P.last_page_len, HQ, HKV, D, PAGE)
        w.run(q, P.cache)


def test_append_page_id_out_of_range():
    P = _paged()
    indices = P.indices.clone()
    indices[-1] = P.num_pages + 1
    k = torch.randn(3, HKV, D, dtype=F16)
    v = torch.randn(3, HKV, D, dtype=F16)
    bi = torch.tensor([2, 2, 2], dtype=torch.int32)
    pos = torch.tensor([30, 31, 32], dtype=torch.int32)
    with pytest.raises(ERRS, match=r"(?i)indices|page"):
        flashinfer.append_paged_kv_cache(k, v, bi, pos, P.cache, indices, P.indptr, P.last_page_len)


def test_append_enable_pdl_where_the_device_has_none():
    """As batch decode; run() here is the append into a copy of the cache, which it changes."""
    P = _paged()
    k = torch.randn(3, HKV, D, dtype=F16)
    v = torch.randn(3, HKV, D, dtype=F16)
    bi = torch.tensor([2, 2, 2], dtype=torch.int32)
    pos = torch.tensor([30, 31, 32], dtype=torch.int32)

    def append(pdl):
        cache = P.cache.clone()
        flashinfer.append_paged_kv_cache(k, v, bi, pos, cache, P.indices, P.indptr, P.last_page_len,
                                         enable_pdl=pdl)
        return cache

    assert not torch.equal(append(None), P.cache)
    k_cache, v_cache = P.cache.unbind(1)
    _assert_enable_pdl_refused(
        append,
        lambda: torch.ops.flashinfer.append_paged_kv_cache(k, v, bi, pos, k_cache, v_cache, P.indices, P.indptr,
                                                           P.last_page_len, 0, 1.0, 1.0, True))


def test_paged_prefill_qo_indptr_last_ne_q_rows(workspace):
    P = _paged()
    w, qo_indptr = _paged_prefill(workspace, P, qo_lens=(3, 4, 5))
    q = torch.randn(int(qo_indptr[-1]) + 2, HQ, D, dtype=F16)
    with pytest.raises(ERRS, match=r"qo_indptr|\bq\b"):
        w.run(q, P.cache)


def test_ragged_qo_indptr_last_ne_q_rows(workspace):
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD")
    w.plan(ref.indptr_from_lens([3, 4]), ref.indptr_from_lens([5, 6]), HQ, HKV, D)
    q, k, v = _qkv(qo_len=6, kv_len=11)
    with pytest.raises(ERRS, match=r"qo_indptr|\bq\b"):
        w.run(q, k, v)


def test_ragged_kv_indptr_last_ne_k_rows(workspace):
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD")
    w.plan(ref.indptr_from_lens([3, 4]), ref.indptr_from_lens([5, 6]), HQ, HKV, D)
    q, k, v = _qkv(qo_len=7, kv_len=13)
    with pytest.raises(ERRS, match=r"kv_indptr|\bk\b"):
        w.run(q, k, v)


def test_decode_batch_size_differs_from_plan(workspace):
    P = _paged()
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
    w.plan(P.indptr, P.indices, P.last_page_len, HQ, HKV, D, PAGE, q_data_type=F16)
    q = torch.randn(5, HQ, D, dtype=F16)
    with pytest.raises(ERRS, match=r"(?i)\bq\b|batch"):
        w.run(q, P.cache)


# ---------------------------------------------------------------------------
# options that are not served, unknown names
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["ROPE_LLAMA", "ALIBI"])
def test_pos_encoding_mode_not_served(workspace, mode):
    q, k, v = _qkv()
    P = _paged()
    with pytest.raises(ValueError, match=r"pos_encoding_mode"):
        flashinfer.single_prefill_with_kv_cache(q, k, v, pos_encoding_mode=mode)
    with pytest.raises(ValueError, match=r"pos_encoding_mode"):
        flashinfer.single_decode_with_kv_cache(q[0], k, v, pos_encoding_mode=mode)
    with pytest.raises(ValueError, match=r"pos_encoding_mode"):
        w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
        w.plan(ref.indptr_from_lens([3, 4, 5]), P.indptr, P.indices, P.last_page_len, HQ, HKV, D, PAGE,
               pos_encoding_mode=mode)
    with pytest.raises(ValueError, match=r"pos_encoding_mode"):
        w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD")
        w.plan(ref.indptr_from_lens([3, 4]), ref.indptr_from_lens([5, 6]), HQ, HKV, D,
               pos_encoding_mode=mode)
    with pytest.raises(ValueError, match=r"pos_encoding_mode"):
        w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
        w.plan(P.indptr, P.indices, P.last_page_len, HQ, HKV, D, PAGE, pos_encoding_mode=mode)


def test_pos_encoding_mode_unknown():
    q, k, v = _qkv()
    with pytest.raises(ERRS, match=r"pos_encoding_mode"):
        flashinfer.single_prefill_with_kv_cache(q, k, v, pos_encoding_mode="ROPE_NEOX_2")


def test_unknown_backend(workspace):
    q, k, v = _qkv()
    P = _paged()
    with pytest.raises(ERRS, match=r"backend"):
        flashinfer.single_prefill_with_kv_cache(q, k, v, backend="foo")
    with pytest.raises(ERRS, match=r"backend"):
        w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD", backend="foo")
        w.plan(ref.indptr_from_lens([3, 4, 5]), P.indptr, P.indices, P.last_page_len, HQ, HKV, D, PAGE)
        w.run(torch.randn(12, HQ, D, dtype=F16), P.cache)
    with pytest.raises(ERRS, match=r"backend"):
        w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD", backend="foo")
        w.plan(ref.indptr_from_lens([3, 4]), ref.indptr_from_lens([5, 6]), HQ, HKV, D)
        w.run(*_qkv(qo_len=7, kv_len=11))
    with pytest.raises(ERRS, match=r"backend"):
        w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", backend="foo")
        w.plan(P.indptr, P.indices, P.last_page_len, HQ, HKV, D, PAGE)
        w.run(torch.randn(3, HQ, D, dtype=F16), P.cache)


def test_unknown_kv_layout(workspace):
    q, k, v = _qkv()
    P = _paged()
    with pytest.raises(ERRS, match=r"kv_layout"):
        flashinfer.single_prefill_with_kv_cache(q, k, v, kv_layout="NDH")
    with pytest.raises(ERRS, match=r"kv_layout"):
        flashinfer.single_decode_with_kv_cache(q[0], k, v, kv_layout="NDH")
    with pytest.raises(ERRS, match=r"kv_layout"):
        flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NDH")
    with pytest.raises(ERRS, match=r"kv_layout"):
        flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NDH")
    with pytest.raises(ERRS, match=r"kv_layout"):
        flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NDH")
    with pytest.raises(ERRS, match=r"kv_layout"):
        flashinfer.append_paged_kv_cache(
            k[:3], v[:3], torch.zeros(3, dtype=torch.int32), torch.arange(3, dtype=torch.int32),
            P.cache, P.indices, P.indptr, P.last_page_len, kv_layout="NDH",
        )


def _corrupt(rng, indptr, indices, last):
    """One random fault in a valid paged batch's index arrays, or none (the valid case)."""
    indptr, indices, last = indptr.clone(), indices.clone(), last.clone()
    kind = int(rng.integers(0, 7))
    b = last.numel()
    r = int(rng.integers(0, b))
    if kind == 1:
        indptr[0] = 1
    elif kind == 2 and b > 1:
        indptr[r + 1] = indptr[r] - 1  # decreasing
    elif kind == 3:
        last[r] = int(rng.choice([0, -1, PAGE + 1]))
    elif kind == 4:
        indices = indices[: max(int(indptr[-1]) - 1, 0)]  # one page id short
    elif kind == 5:
        last = last[:-1]
    elif kind == 6:
        indptr = indptr[:-1]
    valid = kind == 0 or (kind == 2 and b == 1) or (kind == 4 and int(indptr[-1]) == 0)
    if kind == 3 and int(indptr[r + 1]) == int(indptr[r]):
        valid = True  # an empty request's last_page_len is not read
    return indptr, indices, last, valid


@pytest.mark.parametrize("seed", range(60))
def test_plan_refuses_exactly_what_the_named_checks_refuse(workspace, seed):
    # plan() validates the index arrays in one host pass and, on a fault, runs the Python checks
    # that name it. Random batches with one random fault (or none): every fault must surface as
    # a ValueError naming an index array, never as the internal disagreement, and valid arrays
    # must plan.
    import numpy as np

    rng = np.random.default_rng(seed)
    b = int(rng.integers(1, 9))
    pages = torch.from_numpy(rng.integers(0, 5, size=b)).to(torch.int32)
    indptr = torch.zeros(b + 1, dtype=torch.int32)
    indptr[1:] = torch.cumsum(pages, 0)
    indices = torch.arange(int(indptr[-1]) + 2, dtype=torch.int32)
    last = torch.from_numpy(rng.integers(1, PAGE + 1, size=b)).to(torch.int32)
    indptr, indices, last, valid = _corrupt(rng, indptr, indices, last)
    decode = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
    prefill = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
    qo = ref.indptr_from_lens([1] * b)
    for plan in (lambda: decode.plan(indptr, indices, last, HQ, HKV, D, PAGE),
                 lambda: prefill.plan(qo, indptr, indices, last, HQ, HKV, D, PAGE)):
        if valid:
            plan()
        else:
            with pytest.raises(ValueError, match=r"indptr|indices|last_page_len"):
                plan()


@pytest.mark.parametrize("seed", range(30))
def test_ragged_plan_refuses_exactly_what_check_indptr_refuses(workspace, seed):
    import numpy as np

    rng = np.random.default_rng(500 + seed)
    b = int(rng.integers(1, 9))
    kv = torch.zeros(b + 1, dtype=torch.int32)
    kv[1:] = torch.cumsum(torch.from_numpy(rng.integers(0, 40, size=b)).to(torch.int32), 0)
    kind = int(rng.integers(0, 4))
    r = int(rng.integers(0, b))
    if kind == 1:
        kv[0] = 1
    elif kind == 2:
        kv[r + 1] = kv[r] - 1
    elif kind == 3:
        kv = kv[:-1]
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD")
    qo = ref.indptr_from_lens([2] * b)
    if kind == 0:
        w.plan(qo, kv, HQ, HKV, D)
    else:
        with pytest.raises(ValueError, match=r"kv_indptr"):
            w.plan(qo, kv, HQ, HKV, D)
