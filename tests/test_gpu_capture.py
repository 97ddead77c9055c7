"""Every operator on the run path is capturable in a CUDA/HIP graph: capture, replay twice,
compare with the eager result. And a decode step under torch.compile(mode="reduce-overhead")
runs as a cudagraph (no "skipping cudagraphs") and matches eager."""
import pytest
import torch

import torch_flashinfer_ops as flashinfer
from torch_flashinfer_ops.capabilities import Request, platform_of, resolve_backend

import reference as ref

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]

DEV = "cuda"
HQ, HKV, D, PAGE = 8, 2, 128, 16


def _served(op):
    try:
        resolve_backend("fa2", Request(op, platform_of(torch.device(DEV)), torch.float16, torch.float16, D, PAGE))
        return True
    except ValueError:
        return False


def _capture_and_compare(fn, keep=()):
    """fn() returns a tuple of output tensors; eager vs two graph replays must agree exactly.
    Outputs are poisoned before each replay, except those at the indices in `keep` (state the
    step updates in place, such as a cache)."""
    torch.cuda.synchronize()
    eager = [t.clone() for t in fn()]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()  # warm-up on a side stream, as capture requires
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = fn()
    for _ in range(2):
        for i, t in enumerate(static):
            if i not in keep:
                t.fill_(float("nan")) if t.is_floating_point() else t.fill_(-1)
        graph.replay()
        torch.cuda.synchronize()
        for got, want in zip(static, eager):
            assert torch.equal(got, want) or torch.allclose(got.float(), want.float(), rtol=0, atol=0, equal_nan=True)


def _paged(kv_lens):
    ks = [torch.randn(n, HKV, D, dtype=torch.float16) for n in kv_lens]
    vs = [torch.randn(n, HKV, D, dtype=torch.float16) for n in kv_lens]
    paged = ref.build_paged_kv(ks, vs, PAGE)
    return paged, paged.cache.to(DEV)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(7)


def test_batch_decode_capturable():
    paged, cache = _paged([1, 300, 4097])
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(torch.empty(64 << 20, dtype=torch.uint8, device=DEV))
    w.plan(paged.indptr.to(DEV), paged.indices.to(DEV), paged.last_page_len.to(DEV), HQ, HKV, D, PAGE)
    q = torch.randn(3, HQ, D, dtype=torch.float16, device=DEV)
    _capture_and_compare(lambda: w.run(q, cache, return_lse=True))


def test_single_decode_capturable():
    q = torch.randn(HQ, D, dtype=torch.float16, device=DEV)
    k = torch.randn(777, HKV, D, dtype=torch.float16, device=DEV)
    v = torch.randn(777, HKV, D, dtype=torch.float16, device=DEV)
    _capture_and_compare(lambda: flashinfer.single_decode_with_kv_cache(q, k, v, return_lse=True))


@pytest.mark.skipif(not _served("single_prefill"), reason="fa2 prefill is not served by this build")
def test_single_prefill_capturable():
    q = torch.randn(200, HQ, D, dtype=torch.float16, device=DEV)
    k = torch.randn(300, HKV, D, dtype=torch.float16, device=DEV)
    v = torch.randn(300, HKV, D, dtype=torch.float16, device=DEV)
    _capture_and_compare(lambda: flashinfer.single_prefill_with_kv_cache(q, k, v, causal=True, return_lse=True))


@pytest.mark.skipif(not _served("batch_prefill_paged"), reason="fa2 prefill is not served by this build")
def test_batch_prefill_paged_capturable():
    paged, cache = _paged([40, 300, 17])
    qo = ref.indptr_from_lens([10, 300, 1])
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(torch.empty(64 << 20, dtype=torch.uint8, device=DEV))
    w.plan(qo.to(DEV), paged.indptr.to(DEV), paged.indices.to(DEV), paged.last_page_len.to(DEV), HQ, HKV, D, PAGE,
           causal=True)
    q = torch.randn(311, HQ, D, dtype=torch.float16, device=DEV)
    _capture_and_compare(lambda: w.run(q, cache, return_lse=True))


@pytest.mark.skipif(not _served("batch_prefill_ragged"), reason="fa2 prefill is not served by this build")
def test_batch_prefill_ragged_capturable():
    qo, kv = [10, 300, 1], [40, 300, 17]
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(torch.empty(64 << 20, dtype=torch.uint8, device=DEV))
    w.plan(ref.indptr_from_lens(qo).to(DEV), ref.indptr_from_lens(kv).to(DEV), HQ, HKV, D, causal=True)
    q = torch.randn(sum(qo), HQ, D, dtype=torch.float16, device=DEV)
    k = torch.randn(sum(kv), HKV, D, dtype=torch.float16, device=DEV)
    v = torch.randn(sum(kv), HKV, D, dtype=torch.float16, device=DEV)
    _capture_and_compare(lambda: w.run(q, k, v, return_lse=True))


def test_append_and_page_helpers_capturable():
    paged, cache = _paged([20, 33])
    append_indptr = torch.tensor([0, 3, 4], dtype=torch.int32, device=DEV)
    kv_indptr, indices, last = paged.indptr.to(DEV), paged.indices.to(DEV), paged.last_page_len.to(DEV)
    key = torch.randn(4, HKV, D, dtype=torch.float16, device=DEV)
    value = torch.randn(4, HKV, D, dtype=torch.float16, device=DEV)

    def step():
        seq_lens = flashinfer.get_seq_lens(kv_indptr, last, PAGE)
        batch_indices, positions = flashinfer.get_batch_indices_positions(append_indptr, seq_lens, 4)
        flashinfer.append_paged_kv_cache(key, value, batch_indices, positions, cache, indices, kv_indptr, last)
        return seq_lens, batch_indices, positions, cache

    def step_with_fresh_slots():
        # Poison the slots the append writes, so each replay must write them again.
        seq_lens, batch_indices, positions, _ = eager_indices
        for b, p in zip(batch_indices.tolist(), positions.tolist()):
            page = int(indices[int(kv_indptr[b]) + p // PAGE])
            cache[page, :, p % PAGE] = float("nan")
        return step()

    eager_indices = step()
    _capture_and_compare(step, keep=(3,))
    step_with_fresh_slots()  # the eager path rewrites poisoned slots too
    assert not cache.isnan().any()


def test_merge_ops_capturable():
    v_a = torch.randn(50, HQ, D, dtype=torch.float16, device=DEV)
    v_b = torch.randn(50, HQ, D, dtype=torch.float16, device=DEV)
    s_a, s_b = torch.randn(50, HQ, device=DEV), torch.randn(50, HQ, device=DEV)
    vs = torch.randn(50, 3, HQ, D, dtype=torch.float16, device=DEV)
    ss = torch.randn(50, 3, HQ, device=DEV)
    v_acc, s_acc = v_a.clone(), s_a.clone()

    def step():
        v_acc.copy_(v_a)
        s_acc.copy_(s_a)
        flashinfer.merge_state_in_place(v_acc, s_acc, v_b, s_b)
        return (*flashinfer.merge_state(v_a, s_a, v_b, s_b), *flashinfer.merge_states(vs, ss), v_acc, s_acc)

    _capture_and_compare(step)


def _assert_reduce_overhead_graph(step, x):
    """step compiled with mode="reduce-overhead" (fullgraph) matches eager and runs as a CUDA
    graph: inductor reports no cudagraph skips."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(step, mode="reduce-overhead", fullgraph=True)
    eager = step(x)
    for _ in range(3):
        got = compiled(x)
    torch.testing.assert_close(got, eager, rtol=2e-3, atol=2e-3)
    assert not torch._dynamo.utils.counters["inductor"]["cudagraph_skips"], dict(
        torch._dynamo.utils.counters["inductor"])


def test_decode_step_under_reduce_overhead_is_a_cudagraph():
    paged, cache = _paged([5, 1000, 64])
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(torch.empty(64 << 20, dtype=torch.uint8, device=DEV))
    w.plan(paged.indptr.to(DEV), paged.indices.to(DEV), paged.last_page_len.to(DEV), HQ, HKV, D, PAGE)
    proj = torch.nn.Linear(HQ * D, HQ * D, dtype=torch.float16, device=DEV)

    def step(x):
        q = proj(x).view(-1, HQ, D)
        return w.run(q, cache).view(-1, HQ * D) + x

    _assert_reduce_overhead_graph(step, torch.randn(3, HQ * D, dtype=torch.float16, device=DEV))


def test_prefill_step_under_reduce_overhead_is_a_cudagraph():
    paged, cache = _paged([40, 300, 17])
    qo_lens = [40, 7, 17]
    qo_indptr = ref.indptr_from_lens(qo_lens)
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(torch.empty(64 << 20, dtype=torch.uint8, device=DEV))
    w.plan(qo_indptr.to(DEV), paged.indptr.to(DEV), paged.indices.to(DEV), paged.last_page_len.to(DEV),
           HQ, HKV, D, PAGE, causal=True)
    proj = torch.nn.Linear(HQ * D, HQ * D, dtype=torch.float16, device=DEV)

    def step(x):
        q = proj(x).view(-1, HQ, D)
        return w.run(q, cache).view(-1, HQ * D) + x

    _assert_reduce_overhead_graph(step, torch.randn(sum(qo_lens), HQ * D, dtype=torch.float16, device=DEV))
