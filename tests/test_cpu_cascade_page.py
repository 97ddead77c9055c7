"""CPU tier: merge_state(s) and the paged-cache helpers against Python/float64 references."""

import pytest
import torch

import torch_flashinfer_ops as flashinfer

try:
    from . import reference as ref
except ImportError:
    import reference as ref

F16, BF16 = torch.float16, torch.bfloat16
DTYPES = [F16, BF16]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(4242)


def _state(seq_len, num_heads, head_dim, dtype, s_scale=3.0):
    v = torch.randn(seq_len, num_heads, head_dim, dtype=dtype)
    s = torch.randn(seq_len, num_heads, dtype=torch.float32) * s_scale
    return v, s


# ---------------------------------------------------------------------------
# merge_state / merge_state_in_place / merge_states
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seq_len,num_heads,head_dim", [(1, 1, 64), (7, 4, 64), (33, 8, 128), (5, 2, 256)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_state(seq_len, num_heads, head_dim, dtype):
    v_a, s_a = _state(seq_len, num_heads, head_dim, dtype)
    v_b, s_b = _state(seq_len, num_heads, head_dim, dtype)
    r_v, r_s = ref.merge_ref([v_a, v_b], [s_a, s_b])
    v, s = flashinfer.merge_state(v_a, s_a, v_b, s_b)
    ref.assert_attention_close(v, r_v, dtype)
    ref.assert_lse_close(s, r_s)
    v2, s2 = flashinfer.cascade.merge_state(v_a, s_a, v_b, s_b)
    ref.assert_attention_close(v2, r_v, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_state_empty_side(dtype):
    # an empty KV segment has lse -inf (and output 0): merging it is the identity
    v_a, s_a = _state(6, 4, 64, dtype)
    v_b, s_b = _state(6, 4, 64, dtype)
    s_a[1] = float("-inf")
    v_a[1] = 0
    s_b[4, 2] = float("-inf")
    v_b[4, 2] = 0
    r_v, r_s = ref.merge_ref([v_a, v_b], [s_a, s_b])
    v, s = flashinfer.merge_state(v_a, s_a, v_b, s_b)
    ref.assert_attention_close(v, r_v, dtype)
    ref.assert_lse_close(s, r_s)


def test_merge_state_base2_convention():
    # equal lse on both sides: s + 1 (log2 of 2 * 2^s), v the mean
    dtype = F16
    v_a, s_a = _state(4, 2, 64, dtype)
    v_b, _ = _state(4, 2, 64, dtype)
    v, s = flashinfer.merge_state(v_a, s_a, v_b, s_a.clone())
    ref.assert_lse_close(s, s_a.double() + 1.0)
    ref.assert_attention_close(v, (v_a.double() + v_b.double()) / 2, dtype)


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_state_in_place(use_mask, dtype):
    seq_len, num_heads, head_dim = 11, 4, 64
    v, s = _state(seq_len, num_heads, head_dim, dtype)
    v_o, s_o = _state(seq_len, num_heads, head_dim, dtype)
    v0, s0 = v.clone(), s.clone()
    r_v, r_s = ref.merge_ref([v0, v_o], [s0, s_o])
    mask = None
    if use_mask:
        mask = torch.rand(seq_len) < 0.5
        mask[0], mask[1] = True, False
        r_v = torch.where(mask[:, None, None], r_v, v0.double())
        r_s = torch.where(mask[:, None], r_s, s0.double())
        ret = flashinfer.merge_state_in_place(v, s, v_o, s_o, mask)
    else:
        ret = flashinfer.merge_state_in_place(v, s, v_o, s_o)
    assert ret is None
    ref.assert_attention_close(v, r_v, dtype)
    ref.assert_lse_close(s, r_s)
    if use_mask:
        # rows that are not merged are left bit-identical
        assert torch.equal(v[~mask], v0[~mask])
        assert torch.equal(s[~mask], s0[~mask])


@pytest.mark.parametrize("num_states", [1, 3, 7])
@pytest.mark.parametrize("seq_len,num_heads,head_dim", [(1, 1, 64), (9, 4, 64), (20, 8, 128)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_states(num_states, seq_len, num_heads, head_dim, dtype):
    v = torch.randn(seq_len, num_states, num_heads, head_dim, dtype=dtype)
    s = torch.randn(seq_len, num_states, num_heads, dtype=torch.float32) * 3.0
    r_v, r_s = ref.merge_ref([v[:, i] for i in range(num_states)], [s[:, i] for i in range(num_states)])
    v_m, s_m = flashinfer.merge_states(v, s)
    ref.assert_attention_close(v_m, r_v, dtype)
    ref.assert_lse_close(s_m, r_s)
    v_m2, _ = flashinfer.cascade.merge_states(v, s)
    ref.assert_attention_close(v_m2, r_v, dtype)


@pytest.mark.parametrize("split", [1, 37, 99])
@pytest.mark.parametrize("dtype", DTYPES)
def test_split_kv_merge_equals_full(split, dtype):
    # attention over [0, split) and [split, kv_len) merged == attention over the whole KV
    qo_len, kv_len, hq, hkv, d = 13, 100, 8, 2, 64
    q = torch.randn(qo_len, hq, d, dtype=dtype)
    k = torch.randn(kv_len, hkv, d, dtype=dtype)
    v = torch.randn(kv_len, hkv, d, dtype=dtype)
    o_a, s_a = flashinfer.single_prefill_with_kv_cache(q, k[:split], v[:split], return_lse=True)
    o_b, s_b = flashinfer.single_prefill_with_kv_cache(q, k[split:], v[split:], return_lse=True)
    o_full, s_full = flashinfer.single_prefill_with_kv_cache(q, k, v, return_lse=True)
    r_out, r_lse = ref.attention_ref(q, k, v)
    o_m, s_m = flashinfer.merge_state(o_a, s_a, o_b, s_b)
    ref.assert_attention_close(o_m, r_out, dtype, "merged:")
    ref.assert_lse_close(s_m, r_lse, "merged:")
    ref.assert_attention_close(o_full, r_out, dtype, "full:")
    ref.assert_lse_close(s_full, r_lse, "full:")
    # the same through merge_states and in place
    o_ms, s_ms = flashinfer.merge_states(torch.stack([o_a, o_b], 1), torch.stack([s_a, s_b], 1))
    ref.assert_attention_close(o_ms, r_out, dtype, "merge_states:")
    ref.assert_lse_close(s_ms, r_lse, "merge_states:")
    flashinfer.merge_state_in_place(o_a, s_a, o_b, s_b)
    ref.assert_attention_close(o_a, r_out, dtype, "in place:")
    ref.assert_lse_close(s_a, r_lse, "in place:")


def test_split_kv_merge_decode():
    dtype = F16
    hq, hkv, d, kv_len = 8, 2, 64, 300
    q = torch.randn(hq, d, dtype=dtype)
    k = torch.randn(kv_len, hkv, d, dtype=dtype)
    v = torch.randn(kv_len, hkv, d, dtype=dtype)
    cuts = [0, 50, 51, 200, kv_len]
    os_, ss_ = [], []
    for a, b in zip(cuts[:-1], cuts[1:]):
        o, s = flashinfer.single_decode_with_kv_cache(q, k[a:b], v[a:b], return_lse=True)
        os_.append(o)
        ss_.append(s)
    o_m, s_m = flashinfer.merge_states(torch.stack(os_)[None], torch.stack(ss_)[None])
    r_out, r_lse = ref.decode_ref(q, k, v)
    ref.assert_attention_close(o_m[0], r_out, dtype)
    ref.assert_lse_close(s_m[0], r_lse)


# ---------------------------------------------------------------------------
# append_paged_kv_cache
# ---------------------------------------------------------------------------

# (existing length before the append, appended length) per request
APPEND_CASES = {
    "prefill": [(0, 5), (0, 1), (0, 40)],
    "cross_pages": [(13, 10), (5, 1), (31, 40), (16, 16), (0, 33)],
    "decode_step": [(15, 1), (16, 1), (0, 1), (47, 1)],
}


def _append_case(case, page_size, kv_layout, single_tensor, dtype, hkv=2, d=64):
    existing = [c[0] for c in APPEND_CASES[case]]
    appended = [c[1] for c in APPEND_CASES[case]]
    seq_lens = [e + a for e, a in zip(existing, appended)]
    indptr, indices, last, num_pages = ref.make_page_table(seq_lens, page_size)
    nan = float("nan")
    if kv_layout == "NHD":
        page_shape = (page_size, hkv, d)
    else:
        page_shape = (hkv, page_size, d)
    if single_tensor:
        cache = torch.full((num_pages, 2) + page_shape, nan, dtype=dtype)
    else:
        cache = (torch.full((num_pages,) + page_shape, nan, dtype=dtype),
                 torch.full((num_pages,) + page_shape, nan, dtype=dtype))
    append_indptr = ref.indptr_from_lens(appended)
    nnz = int(append_indptr[-1])
    k = torch.randn(nnz, hkv, d, dtype=dtype)
    v = torch.randn(nnz, hkv, d, dtype=dtype)
    bi, pos = ref.batch_indices_positions_ref(append_indptr, seq_lens)
    return cache, k, v, bi, pos, indices, indptr, last, append_indptr, seq_lens


def _assert_cache_equal(got, want):
    if isinstance(want, tuple):
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)
    else:
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("case", list(APPEND_CASES))
@pytest.mark.parametrize("page_size", [1, 16, 32])
@pytest.mark.parametrize("kv_layout", ["NHD", "HND"])
@pytest.mark.parametrize("single_tensor", [True, False], ids=["kv5d", "kvtuple"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_append_paged_kv_cache(case, page_size, kv_layout, single_tensor, dtype):
    cache, k, v, bi, pos, indices, indptr, last, _, _ = _append_case(
        case, page_size, kv_layout, single_tensor, dtype
    )
    want = ref.append_ref(cache, k, v, bi, pos, indices, indptr, kv_layout)
    ret = flashinfer.append_paged_kv_cache(
        k,
        v,
        torch.tensor(bi, dtype=torch.int32),
        torch.tensor(pos, dtype=torch.int32),
        cache,
        indices,
        indptr,
        last,
        kv_layout=kv_layout,
    )
    assert ret is None
    # written slots hold the appended values; every other slot is still NaN
    _assert_cache_equal(cache, want)


def test_append_then_attend():
    # append through the library helpers, then decode over the cache
    dtype, page_size, hq, hkv, d = F16, 16, 8, 2, 64
    cache, k, v, _, _, indices, indptr, last, append_indptr, seq_lens = _append_case(
        "prefill", page_size, "NHD", True, dtype
    )
    nnz = int(append_indptr[-1])
    seq_lens_t = flashinfer.page.get_seq_lens(indptr, last, page_size)
    assert [int(x) for x in seq_lens_t] == seq_lens
    bi, pos = flashinfer.page.get_batch_indices_positions(append_indptr, seq_lens_t, nnz)
    flashinfer.append_paged_kv_cache(k, v, bi, pos, cache, indices, indptr, last, "NHD")
    back = ref.gather_paged_kv(cache, indptr, indices, last, "NHD")
    for b in range(len(seq_lens)):
        s, e = int(append_indptr[b]), int(append_indptr[b + 1])
        assert torch.equal(back[b][0], k[s:e])
        assert torch.equal(back[b][1], v[s:e])
    cache.nan_to_num_(nan=100.0)  # padding slots finite here: this test is about the append
    q = torch.randn(len(seq_lens), hq, d, dtype=dtype)
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(torch.empty(32 * 1024 * 1024, dtype=torch.uint8), "NHD")
    w.plan(indptr, indices, last, hq, hkv, d, page_size, q_data_type=dtype)
    out = w.run(q, cache)
    for b in range(len(seq_lens)):
        r_out, _ = ref.decode_ref(q[b], back[b][0], back[b][1])
        ref.assert_attention_close(out[b], r_out, dtype)


# ---------------------------------------------------------------------------
# get_batch_indices_positions / get_seq_lens
# ---------------------------------------------------------------------------


def test_get_batch_indices_positions_doc_example():
    append_indptr = torch.tensor([0, 1, 3, 6, 10], dtype=torch.int32)
    seq_lens = torch.tensor([5, 5, 5, 5], dtype=torch.int32)
    bi, pos = flashinfer.page.get_batch_indices_positions(append_indptr, seq_lens, 10)
    assert bi.dtype == torch.int32 and pos.dtype == torch.int32
    assert bi.tolist() == [0, 1, 1, 2, 2, 2, 3, 3, 3, 3]
    assert pos.tolist() == [4, 3, 4, 2, 3, 4, 1, 2, 3, 4]


@pytest.mark.parametrize("batch_size", [1, 4, 17])
def test_get_batch_indices_positions(batch_size):
    appended = torch.randint(0, 40, (batch_size,)).tolist()
    appended[0] = max(appended[0], 1)
    existing = torch.randint(0, 100, (batch_size,)).tolist()
    seq_lens = [a + e for a, e in zip(appended, existing)]
    append_indptr = ref.indptr_from_lens(appended)
    nnz = int(append_indptr[-1])
    bi, pos = flashinfer.page.get_batch_indices_positions(
        append_indptr, torch.tensor(seq_lens, dtype=torch.int32), nnz
    )
    r_bi, r_pos = ref.batch_indices_positions_ref(append_indptr, seq_lens)
    assert bi.shape == (nnz,) and pos.shape == (nnz,)
    assert bi.tolist() == r_bi
    assert pos.tolist() == r_pos
    bi2, pos2 = flashinfer.get_batch_indices_positions(
        append_indptr, torch.tensor(seq_lens, dtype=torch.int32), nnz
    )
    assert bi2.tolist() == r_bi and pos2.tolist() == r_pos


@pytest.mark.parametrize("page_size", [1, 16, 32])
def test_get_seq_lens(page_size):
    seq_lens = [1, 16, 17, 100, 32, 5]
    indptr, _, last, _ = ref.make_page_table(seq_lens, page_size)
    got = flashinfer.page.get_seq_lens(indptr, last, page_size)
    assert got.tolist() == ref.seq_lens_ref(indptr, last, page_size) == seq_lens
    assert flashinfer.get_seq_lens(indptr, last, page_size).tolist() == seq_lens


def test_get_seq_lens_empty_request():
    # a request with no pages: clamp(num_pages - 1, 0) * page_size + last_page_len
    indptr = torch.tensor([0, 2, 2, 3], dtype=torch.int32)
    last = torch.tensor([3, 0, 16], dtype=torch.int32)
    got = flashinfer.page.get_seq_lens(indptr, last, 16)
    assert got.tolist() == ref.seq_lens_ref(indptr, last, 16) == [19, 0, 16]


def _slots(positions, batch_indices=None):
    """Two requests of 2 pages (page 16, last pages holding 5 and 16): 21 and 32 kv slots."""
    i32 = torch.int32
    positions = torch.tensor(positions, dtype=i32)
    batch_indices = torch.zeros_like(positions) if batch_indices is None else torch.tensor(batch_indices, dtype=i32)
    return (batch_indices, positions, torch.tensor([3, 0, 1, 2], dtype=i32), torch.tensor([0, 2, 4], dtype=i32),
            torch.tensor([5, 16], dtype=i32))


@pytest.mark.parametrize("positions, batch_indices, match", [
    ([20], None, None),
    ([21], None, r"positions\[0\] = 21 is beyond request 0's 21 kv slots"),
    ([31, 32], [1, 1], r"positions\[1\] = 32 is beyond request 1's 32 kv slots"),
    ([0], [2], r"batch_indices\[0\] = 2 is out of range for batch_size 2"),
])
def test_checked_mode_append_slots(positions, batch_indices, match):
    """The checked mode's slot checks (run on GPU arrays when TORCH_FLASHINFER_OPS_DEBUG=1)."""
    from torch_flashinfer_ops import _debug

    args = _slots(positions, batch_indices)
    if match is None:
        _debug.check_append_slots(*args, page_size=16, num_pages=4)
    else:
        with pytest.raises(ValueError, match=match):
            _debug.check_append_slots(*args, page_size=16, num_pages=4)


def test_checked_mode_page_ids():
    from torch_flashinfer_ops import _debug

    with pytest.raises(ValueError, match="kv_indices entry 3 is not a page of the cache"):
        _debug.check_append_slots(*_slots([0]), page_size=16, num_pages=3)
