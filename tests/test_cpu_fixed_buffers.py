"""use_cuda_graph=True wrappers keep fixed-address buffers: plan() rewrites them in place,
and a plan that does not fit raises before anything is written. (The buffer logic is
device-independent; capture and replay themselves are in the GPU tier.)"""
import pytest
import torch

import torch_flashinfer_ops as flashinfer

import reference as ref

HQ, HKV, D, PAGE = 4, 2, 64, 16


def _decode_wrapper(max_batch, max_pages):
    bufs = dict(paged_kv_indptr_buffer=torch.full((max_batch + 1,), -7, dtype=torch.int32),
                paged_kv_indices_buffer=torch.full((max_pages,), -7, dtype=torch.int32),
                paged_kv_last_page_len_buffer=torch.full((max_batch,), -7, dtype=torch.int32))
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(torch.empty(8 << 20, dtype=torch.uint8), "NHD",
                                                      use_cuda_graph=True, **bufs)
    return w, bufs


def test_plan_rewrites_fixed_buffers_in_place():
    torch.manual_seed(0)
    w, bufs = _decode_wrapper(8, 64)
    addresses = {k: v.data_ptr() for k, v in bufs.items()}
    plan_address = w._workspace.plan_view().data_ptr()
    for kv_lens in ([33, 1, 70], [5, 200, 16, 9]):
        ks = [torch.randn(n, HKV, D).half() for n in kv_lens]
        vs = [torch.randn(n, HKV, D).half() for n in kv_lens]
        paged = ref.build_paged_kv(ks, vs, PAGE)
        w.plan(paged.indptr, paged.indices, paged.last_page_len, HQ, HKV, D, PAGE)
        assert {k: v.data_ptr() for k, v in bufs.items()} == addresses
        assert w._workspace.plan_view().data_ptr() == plan_address
        assert torch.equal(bufs["paged_kv_indptr_buffer"][: len(kv_lens) + 1], paged.indptr)
        q = torch.randn(len(kv_lens), HQ, D).half()
        out = w.run(q, paged.cache)
        for b in range(len(kv_lens)):
            o_ref, _ = ref.decode_ref(q[b], ks[b], vs[b])
            ref.assert_attention_close(out[b], o_ref, torch.float16)


@pytest.mark.parametrize("too_many", ["requests", "pages"])
def test_plan_that_does_not_fit_raises_before_writing(too_many):
    w, bufs = _decode_wrapper(4, 16)
    kv_lens = [3] * 6 if too_many == "requests" else [100, 200]
    ks = [torch.randn(n, HKV, D).half() for n in kv_lens]
    paged = ref.build_paged_kv(ks, ks, PAGE)
    before = {k: v.clone() for k, v in bufs.items()}
    with pytest.raises(ValueError, match="buffer"):
        w.plan(paged.indptr, paged.indices, paged.last_page_len, HQ, HKV, D, PAGE)
    for k, v in bufs.items():
        assert torch.equal(v, before[k]), f"{k} was written by a plan that did not fit"


def test_prefill_fixed_buffers_required():
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(torch.empty(8 << 20, dtype=torch.uint8), "NHD",
                                                       use_cuda_graph=True)
    indptr = torch.tensor([0, 1], dtype=torch.int32)
    with pytest.raises(ValueError, match="qo_indptr_buf"):
        w.plan(torch.tensor([0, 3], dtype=torch.int32), indptr, indptr[:1], torch.tensor([3], dtype=torch.int32),
               HQ, HKV, D, PAGE)


def test_workspace_too_small_for_the_schedule_raises_before_writing():
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(torch.empty(64 * 1024, dtype=torch.uint8), "NHD")
    kv_lens = [1] * 700  # 8 + 2 * 700 + 6 * 700 int32 > the 14 KiB schedule part of the plan region
    ks = [torch.randn(n, HKV, D).half() for n in kv_lens]
    paged = ref.build_paged_kv(ks, ks, PAGE)
    plan_region = w._workspace.plan_view()
    plan_region.fill_(-5)
    with pytest.raises(ValueError, match="float_workspace_buffer"):
        w.plan(paged.indptr, paged.indices, paged.last_page_len, HQ, HKV, D, PAGE)
    assert bool((plan_region == -5).all()), "the plan region was written by a plan that did not fit"


def _span(t):
    return t.data_ptr(), t.data_ptr() + t.element_size() * t.numel()


def test_plan_buffers_are_the_wrappers_and_partials_apart():
    """The schedule, the split counters (which the GPU decode kernels leave at zero; allocated
    zeroed) and partial_lse are the wrapper's own buffers; partial_o lies in the user's
    workspace. No two tensors that run() writes share a storage (so torch.compile writes them in
    place), and nothing a later run() reads lies in the workspace (so wrappers may share it)."""
    torch.manual_seed(0)
    buffer = torch.full((8 << 20,), 0x5A, dtype=torch.uint8)
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(buffer, "NHD")
    counters = w._workspace.split_counters
    assert counters.dtype == torch.int32 and counters.numel() >= 1024
    assert int(counters.count_nonzero()) == 0
    kv_lens = [700, 3, 1500]
    ks = [torch.randn(n, HKV, D).half() for n in kv_lens]
    paged = ref.build_paged_kv(ks, ks, PAGE)
    w.plan(paged.indptr, paged.indices, paged.last_page_len, HQ, HKV, D, PAGE)
    plan = w._plan
    assert plan.split_counters is counters and plan.plan_info is w._workspace.plan_view()
    ws_start, ws_end = _span(buffer)
    o_start, o_end = _span(plan.partial_o)
    assert ws_start <= o_start and o_end <= ws_end
    for t in (plan.plan_info, counters, plan.partial_lse):
        start, end = _span(t)
        assert end <= ws_start or start >= ws_end, "only partial_o lies in the workspace"
    written = [counters, plan.partial_o, plan.partial_lse]
    assert len({t.untyped_storage().data_ptr() for t in written}) == 3, "written tensors must not share a storage"
    # Fixed addresses, marked static for cudagraphs (which otherwise copy an input before each replay).
    for t in (plan.plan_info, *written):
        assert getattr(t, "_dynamo_static_input_type", None) is not None
    w.run(torch.randn(len(kv_lens), HQ, D).half(), paged.cache)
    assert int(counters.count_nonzero()) == 0


def test_wrappers_sharing_one_workspace_keep_their_plans():
    """Serving engines hand one workspace buffer to their prefill and decode wrappers and plan
    both before running either: each run must use its own wrapper's plan."""
    torch.manual_seed(0)
    kv_lens = [300, 40, 17]
    ks = [torch.randn(n, HKV, D).half() for n in kv_lens]
    vs = [torch.randn(n, HKV, D).half() for n in kv_lens]
    paged = ref.build_paged_kv(ks, vs, PAGE)
    shared = torch.empty(8 << 20, dtype=torch.uint8)
    decode = flashinfer.BatchDecodeWithPagedKVCacheWrapper(shared, "NHD")
    prefill = flashinfer.BatchPrefillWithPagedKVCacheWrapper(shared, "NHD")
    decode.plan(paged.indptr, paged.indices, paged.last_page_len, HQ, HKV, D, PAGE)
    qo_indptr = torch.tensor([0, 5, 6, 20], dtype=torch.int32)
    prefill.plan(qo_indptr, paged.indptr, paged.indices, paged.last_page_len, HQ, HKV, D, PAGE, causal=True)
    q_decode = torch.randn(len(kv_lens), HQ, D).half()
    q_prefill = torch.randn(int(qo_indptr[-1]), HQ, D).half()
    out_decode = decode.run(q_decode, paged.cache)
    out_prefill = prefill.run(q_prefill, paged.cache)
    for r in range(len(kv_lens)):
        want, _ = ref.decode_ref(q_decode[r], ks[r], vs[r])
        ref.assert_attention_close(out_decode[r], want, torch.float16, f"decode request {r}")
        lo, hi = int(qo_indptr[r]), int(qo_indptr[r + 1])
        want, _ = ref.attention_ref(q_prefill[lo:hi], ks[r], vs[r], causal=True)
        ref.assert_attention_close(out_prefill[lo:hi], want, torch.float16, f"prefill request {r}")
