"""GPU tier: merge_state(s) against the base-2 merge reference; the paged-KV index functions and
append_paged_kv_cache (16-bit and FP8 caches) against the reference scatter, on poisoned caches."""

import pytest
import torch

import torch_flashinfer_ops as flashinfer

try:
    from . import reference as ref
    from .pdl_chain import assert_pdl_chain_matches, device_has_pdl
except ImportError:
    import reference as ref
    from pdl_chain import assert_pdl_chain_matches, device_has_pdl

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA/HIP GPU"),
]

DEV = "cuda"
F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32
FP8 = (torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(99)


def _states(n, seq, heads, d, dtype):
    vs = [torch.randn(seq, heads, d).to(dtype) for _ in range(n)]
    ss = [torch.randn(seq, heads) * 5 for _ in range(n)]
    ss[0][0, 0] = float("-inf")  # one state saw nothing for this row
    if n > 1:
        for s in ss:
            s[-1, -1] = float("-inf")  # no state saw anything: v = 0, s = -inf
    return vs, ss


def _close(v, s, r_v, r_s, dtype):
    tol = {F16: 2e-3, BF16: 1.6e-2, F32: 1e-5}[dtype]
    torch.testing.assert_close(v.cpu().double(), torch.nan_to_num(r_v, nan=0.0), rtol=tol, atol=tol)
    torch.testing.assert_close(s.cpu().double(), r_s, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [F16, BF16, F32])
@pytest.mark.parametrize("seq,heads,d", [(1, 1, 64), (37, 8, 128), (300, 32, 256)])
def test_merge_state(dtype, seq, heads, d):
    (va, vb), (sa, sb) = _states(2, seq, heads, d, dtype)
    r_v, r_s = ref.merge_ref([va, vb], [sa, sb])
    v, s = flashinfer.merge_state(va.to(DEV), sa.to(DEV), vb.to(DEV), sb.to(DEV))
    assert v.dtype == dtype and s.dtype == F32
    _close(v, s, r_v, r_s, dtype)


@pytest.mark.parametrize("dtype", [F16, BF16, F32])
@pytest.mark.parametrize("masked", [False, True])
def test_merge_state_in_place(dtype, masked):
    seq, heads, d = 65, 4, 128
    (v0, v1), (s0, s1) = _states(2, seq, heads, d, dtype)
    r_v, r_s = ref.merge_ref([v0, v1], [s0, s1])
    mask = torch.rand(seq) < 0.5 if masked else None
    if masked:
        r_v = torch.where(mask.view(-1, 1, 1), r_v, v0.double())
        r_s = torch.where(mask.view(-1, 1), r_s, s0.double())
    v, s = v0.to(DEV), s0.to(DEV)
    flashinfer.merge_state_in_place(v, s, v1.to(DEV), s1.to(DEV), mask.to(DEV) if masked else None)
    _close(v, s, r_v, r_s, dtype)


@pytest.mark.parametrize("dtype", [F16, BF16, F32])
@pytest.mark.parametrize("num_states", [1, 3, 8])
def test_merge_states(dtype, num_states):
    seq, heads, d = 50, 8, 128
    vs, ss = _states(num_states, seq, heads, d, dtype)
    r_v, r_s = ref.merge_ref(vs, ss)
    v, s = flashinfer.merge_states(torch.stack(vs, 1).to(DEV), torch.stack(ss, 1).to(DEV))
    _close(v, s, r_v, r_s, dtype)


@pytest.mark.parametrize("page_size", [1, 16, 64])
def test_get_seq_lens(page_size):
    pages = torch.randint(0, 9, (300,), dtype=torch.int32)
    indptr = torch.cat([torch.zeros(1, dtype=torch.int32), pages.cumsum(0).to(torch.int32)])
    last = torch.randint(1, page_size + 1, (300,), dtype=torch.int32)
    out = flashinfer.page.get_seq_lens(indptr.to(DEV), last.to(DEV), page_size)
    assert out.tolist() == ref.seq_lens_ref(indptr, last, page_size)


@pytest.mark.parametrize("batch", [1, 7, 512])
@pytest.mark.parametrize("padding", [0, 13])
def test_get_batch_indices_positions(batch, padding):
    appended = torch.randint(0, 40, (batch,), dtype=torch.int32)
    seq_lens = appended + torch.randint(0, 1000, (batch,), dtype=torch.int32)
    indptr = torch.cat([torch.zeros(1, dtype=torch.int32), appended.cumsum(0).to(torch.int32)])
    nnz = int(indptr[-1]) + padding
    bi, pos = flashinfer.page.get_batch_indices_positions(indptr.to(DEV), seq_lens.to(DEV), nnz)
    r_bi, r_pos = ref.batch_indices_positions_ref(indptr, seq_lens)
    assert bi.tolist() == r_bi + [-1] * padding
    assert pos.tolist() == r_pos + [-1] * padding


def _append_case(old_lens, appended, page_size, heads, d, src_dtype, cache_dtype, kv_layout, k_scale, v_scale):
    new_lens = [o + a for o, a in zip(old_lens, appended)]
    indptr, indices, last, num_pages = ref.make_page_table(new_lens, page_size)
    shape = (num_pages, 2) + ((page_size, heads, d) if kv_layout == "NHD" else (heads, page_size, d))
    if cache_dtype in FP8:
        cache = torch.randint(0, 256, shape, dtype=torch.uint8).view(cache_dtype)  # poison: random bytes
    else:
        cache = torch.full(shape, float("nan"), dtype=cache_dtype)  # poison: NaN
    nnz = sum(appended)
    key = torch.randn(nnz, heads, d).to(src_dtype)
    value = torch.randn(nnz, heads, d).to(src_dtype)
    append_indptr = ref.indptr_from_lens(appended)
    seq_lens = torch.tensor(new_lens, dtype=torch.int32)
    bi, pos = flashinfer.page.get_batch_indices_positions(append_indptr.to(DEV), seq_lens.to(DEV), nnz)
    r_bi, r_pos = ref.batch_indices_positions_ref(append_indptr, seq_lens)
    assert bi.tolist() == r_bi and pos.tolist() == r_pos

    cache_dev = cache.to(DEV)
    flashinfer.page.append_paged_kv_cache(key.to(DEV), value.to(DEV), bi, pos, cache_dev, indices.to(DEV),
                                          indptr.to(DEV), last.to(DEV), kv_layout=kv_layout,
                                          k_scale=k_scale, v_scale=v_scale)
    # The reference stores value / scale (exact for these power-of-two scales) in the cache dtype.
    expected = ref.append_ref(cache, (key.float() / k_scale), (value.float() / v_scale), r_bi, r_pos,
                              indices, indptr, kv_layout)
    bits = torch.uint8 if cache_dtype in FP8 else torch.int16
    got = cache_dev.cpu().view(bits)
    want = expected.view(bits)
    n_bad = int((got != want).sum())
    assert n_bad == 0, f"{n_bad} cache elements differ from the reference scatter (or were written outside it)"


@pytest.mark.parametrize(
    "old_lens,appended,page_size",
    [
        ([0], [1], 16),                     # batch of one, first token
        ([5], [4096], 16),                  # 4k tokens crossing many pages
        ([15, 16, 17, 0], [1, 1, 20, 33], 16),  # partly filled last pages, crossing boundaries
        ([3] * 512, [1] * 512, 1),          # 512 requests, page size 1
        ([int(x) for x in torch.randint(0, 300, (64,), generator=torch.Generator().manual_seed(5))],
         [int(x) for x in torch.randint(1, 70, (64,), generator=torch.Generator().manual_seed(6))], 64),
        ([6, 0, 13, 40], [9, 7, 1, 25], 7),  # a page size that is not a power of two
    ],
    ids=["bs1-append1", "append4k", "boundaries", "bs512-p1", "bs64-p64", "p7"],
)
@pytest.mark.parametrize("kv_layout", ["NHD", "HND"])
@pytest.mark.parametrize("dtype", [F16, BF16])
def test_append_paged_kv_cache(old_lens, appended, page_size, kv_layout, dtype):
    _append_case(old_lens, appended, page_size, 4, 128, dtype, dtype, kv_layout, 1.0, 1.0)


@pytest.mark.parametrize("cache_dtype", FP8, ids=lambda t: str(t).split(".")[-1])
@pytest.mark.parametrize("kv_layout", ["NHD", "HND"])
@pytest.mark.parametrize("scales", [(1.0, 1.0), (0.5, 2.0)])
def test_append_paged_kv_cache_fp8(cache_dtype, kv_layout, scales):
    _append_case([15, 0, 40], [3, 17, 100], 16, 2, 64, F16, cache_dtype, kv_layout, *scales)


def test_append_cuda_graph_replay():
    """An append captured in a CUDA graph writes the new tokens of each replay's contents."""
    page_size, heads, d, bs, nnz = 16, 4, 64, 4, 12
    num_pages = 64
    cache = torch.zeros(num_pages, 2, page_size, heads, d, dtype=F16, device=DEV)
    key = torch.empty(nnz, heads, d, dtype=F16, device=DEV)
    value = torch.empty_like(key)
    bi = torch.empty(nnz, dtype=torch.int32, device=DEV)
    pos = torch.empty_like(bi)
    indices = torch.empty(num_pages, dtype=torch.int32, device=DEV)
    indptr = torch.empty(bs + 1, dtype=torch.int32, device=DEV)
    last = torch.empty(bs, dtype=torch.int32, device=DEV)

    def fill(old_lens, appended):
        new_lens = [o + a for o, a in zip(old_lens, appended)]
        ip, ind, la, _ = ref.make_page_table(new_lens, page_size, extra_pages=num_pages - sum(
            ref.num_pages_for(n, page_size) for n in new_lens))
        a_ip = ref.indptr_from_lens(appended)
        b, p = flashinfer.page.get_batch_indices_positions(a_ip.to(DEV), torch.tensor(new_lens, dtype=torch.int32,
                                                                                      device=DEV), nnz)
        bi.copy_(b)
        pos.copy_(p)
        indices.zero_()
        indices[: ind.numel()].copy_(ind)
        indptr.copy_(ip)
        last.copy_(la)
        key.copy_(torch.randn(nnz, heads, d, dtype=F16))
        value.copy_(torch.randn(nnz, heads, d, dtype=F16))

    def append(c):
        flashinfer.page.append_paged_kv_cache(key, value, bi, pos, c, indices, indptr, last)

    fill([0, 5, 16, 30], [3, 3, 3, 3])
    append(cache.clone())  # warm-up
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        append(cache)
    for old, new in (([0, 5, 16, 30], [3, 3, 3, 3]), ([40, 1, 0, 7], [1, 10, 1, 0])):
        fill(old, new)
        cache.zero_()
        eager = cache.clone()
        append(eager)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(cache, eager)
        assert cache.abs().sum() > 0


@pytest.mark.skipif(not device_has_pdl(), reason="programmatic dependent launch: NVIDIA sm_90+")
def test_append_pdl_waits_for_the_kernel_before():
    """enable_pdl=True: the append may launch while the kernel before it finishes and must wait
    for it before reading. Each step's key is written in place by the kernel right before the
    append (the indices by the one before that); with PDL, eager and captured in a CUDA graph
    (cache poisoned before the replay), every step's cache is bitwise the chain without PDL, and
    the last step's is the reference scatter."""
    old_lens, appended, page_size, heads, d = [100, 7, 3000, 0], [1000, 1, 2048, 1047], 16, 8, 128
    new_lens = [o + a for o, a in zip(old_lens, appended)]
    indptr, indices, last, num_pages = ref.make_page_table(new_lens, page_size)
    nnz = sum(appended)
    key0 = torch.randn(nnz, heads, d, dtype=F16, device=DEV)
    value = torch.randn(nnz, heads, d, dtype=F16, device=DEV)
    key = torch.empty_like(key0)
    append_indptr, seq_lens = ref.indptr_from_lens(appended), torch.tensor(new_lens, dtype=torch.int32)
    append_indptr_dev, seq_lens_dev = append_indptr.to(DEV), seq_lens.to(DEV)
    args = (indices.to(DEV), indptr.to(DEV), last.to(DEV))
    cache = torch.full((num_pages, 2, page_size, heads, d), float("nan"), dtype=F16, device=DEV)

    def chain(pdl):
        snapshots = []
        for step in range(4):
            bi, pos = flashinfer.get_batch_indices_positions(append_indptr_dev, seq_lens_dev, nnz)
            torch.mul(key0, step + 1, out=key)  # the append reads what this kernel writes
            flashinfer.append_paged_kv_cache(key, value, bi, pos, cache, *args, enable_pdl=pdl)
            snapshots.append(cache.clone())
        return snapshots

    want = chain(False)
    r_bi, r_pos = ref.batch_indices_positions_ref(append_indptr, seq_lens)
    poisoned = torch.full(cache.shape, float("nan"), dtype=F16)
    expected = ref.append_ref(poisoned, (key0 * 4).float().cpu(), value.float().cpu(), r_bi, r_pos, indices,
                              indptr, "NHD")
    assert torch.equal(want[-1].cpu().view(torch.int16), expected.view(torch.int16))

    def poison():
        cache.fill_(float("nan"))
        key.zero_()

    assert_pdl_chain_matches(chain, want, poison)


def test_append_checked_mode_raises_on_bad_positions(monkeypatch):
    """Without checked mode a slot beyond the request's pages is skipped on the GPU (no host
    sync); with TORCH_FLASHINFER_OPS_DEBUG=1 the call raises the CPU path's error instead."""
    cache = torch.zeros(4, 2, 16, 2, 64, dtype=F16, device=DEV)
    k = torch.randn(1, 2, 64, dtype=F16, device=DEV)
    i32 = dict(dtype=torch.int32, device=DEV)
    args = (torch.zeros(1, **i32), torch.tensor([40], **i32), cache, torch.tensor([3, 0, 1, 2], **i32),
            torch.tensor([0, 2, 4], **i32), torch.tensor([5, 16], **i32))
    monkeypatch.delenv("TORCH_FLASHINFER_OPS_DEBUG", raising=False)
    flashinfer.append_paged_kv_cache(k, k, *args)
    torch.cuda.synchronize()
    assert not cache.any()
    monkeypatch.setenv("TORCH_FLASHINFER_OPS_DEBUG", "1")
    with pytest.raises(ValueError, match=r"positions\[0\] = 40 is beyond request 0's 21 kv slots"):
        flashinfer.append_paged_kv_cache(k, k, *args)
