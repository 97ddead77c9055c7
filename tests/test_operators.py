"""The operator registry: every torch.ops.flashinfer operator has a fake and sample
inputs, and passes torch.library.opcheck (schema, fake, autograd registration, AOT
dispatch) on several shape/option sets. The schema list itself is pinned."""
import math

import pytest
import torch

import torch_flashinfer_ops  # noqa: F401  (registers the operators)

ops = torch.ops.flashinfer

try:
    import expecttest
except ImportError:  # the GPU machine lacks it; CI installs it
    expecttest = None


def registered_ops():
    names = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("flashinfer::")]
    return sorted(n.split("::", 1)[1] for n in names)


def _plan(qo_lens, kv_lens, q_tile_rows=4, kv_chunk_size=0):
    qo_indptr = torch.zeros(len(qo_lens) + 1, dtype=torch.int32)
    qo_indptr[1:] = torch.cumsum(torch.tensor(qo_lens), 0)
    kv = torch.tensor(kv_lens, dtype=torch.int32)
    plan = torch.zeros(4096, dtype=torch.int32)
    ops.plan_batch(qo_indptr, kv, plan, q_tile_rows, kv_chunk_size)
    return qo_indptr, kv, plan


def _partials(plan, heads, dim):
    rows = max(int(plan[4]), 1)
    return torch.empty(rows * heads * dim), torch.empty(rows * heads)


def _paged(lens, page_size, heads, dim, layout, dtype=torch.float16):
    pages = [max(1, math.ceil(n / page_size)) if n else 0 for n in lens]
    total = sum(pages)
    shape = (total + 1, page_size, heads, dim) if layout == 0 else (total + 1, heads, page_size, dim)
    kv = torch.randn(total + 1, 2, *shape[1:]).to(dtype)
    indptr = torch.zeros(len(lens) + 1, dtype=torch.int32)
    indptr[1:] = torch.cumsum(torch.tensor(pages), 0)
    indices = torch.randperm(total + 1)[:total].to(torch.int32)
    last = torch.tensor([(n - 1) % page_size + 1 if n else 0 for n in lens], dtype=torch.int32)
    return kv[:, 0], kv[:, 1], indptr, indices, last


def samples_single_prefill():
    for (qo, kv, hq, hkv, d, layout, causal, wl, cap, lse, mask) in [
        (5, 9, 4, 2, 64, 0, True, -1, 0.0, True, False),
        (7, 7, 4, 4, 128, 1, False, 3, 30.0, False, False),
        (3, 6, 2, 1, 64, 0, False, -1, 0.0, True, True),
    ]:
        q = torch.randn(qo, hq, d, dtype=torch.float16)
        kshape = (kv, hkv, d) if layout == 0 else (hkv, kv, d)
        k, v = torch.randn(kshape).half(), torch.randn(kshape).half()
        o = torch.empty_like(q)
        l = torch.empty(qo, hq) if lse else None
        m = torch.randint(0, 256, ((qo * kv + 7) // 8,), dtype=torch.uint8) if mask else None
        yield (q, k, v, o, l, m, layout, causal, wl, 0.125, cap, 1.0, 1.0)


def samples_single_decode():
    # float8 is exercised by the reference tests; opcheck compares mutations with ops float8 lacks.
    for (kv, hq, hkv, d, layout, kv_dtype) in [(9, 4, 2, 64, 0, torch.float16),
                                                (33, 8, 1, 128, 1, torch.bfloat16),
                                                (17, 4, 4, 64, 0, torch.float16)]:
        q = torch.randn(hq, d, dtype=torch.bfloat16 if kv_dtype == torch.bfloat16 else torch.float16)
        kshape = (kv, hkv, d) if layout == 0 else (hkv, kv, d)
        k, v = torch.randn(kshape).to(kv_dtype), torch.randn(kshape).to(kv_dtype)
        yield (q, k, v, torch.empty_like(q), torch.empty(hq), layout, -1, 0.1, 0.0, 0.5, 2.0, False)


def samples_plan_batch():
    for qo, kv, chunk in [([3, 1, 8], [5, 1, 20], 0), ([1, 1], [40, 7], 16)]:
        qo_indptr = torch.zeros(len(qo) + 1, dtype=torch.int32)
        qo_indptr[1:] = torch.cumsum(torch.tensor(qo), 0)
        yield (qo_indptr, torch.tensor(kv, dtype=torch.int32), torch.zeros(1024, dtype=torch.int32), 4, chunk)


def samples_batch_prefill_paged_run():
    for lens_q, lens_kv, page, layout, causal, chunk in [([3, 5], [7, 12], 4, 0, True, 0),
                                                         ([2, 1, 4], [2, 9, 30], 16, 1, False, 8)]:
        hq, hkv, d = 4, 2, 64
        k, v, indptr, indices, last = _paged(lens_kv, page, hkv, d, layout)
        qo_indptr, _, plan = _plan(lens_q, lens_kv, kv_chunk_size=chunk)
        q = torch.randn(sum(lens_q), hq, d, dtype=torch.float16)
        po, pl = _partials(plan, hq, d)
        yield (q, k, v, qo_indptr, indptr, indices, last, plan, po, pl, torch.empty_like(q),
               torch.empty(q.shape[0], hq), None, None, layout, causal, -1, 0.125, 0.0, 1.0, 1.0)


def samples_batch_prefill_ragged_run():
    for lens_q, lens_kv, layout, causal, masked in [([3, 5], [7, 12], 0, True, False),
                                                    ([2, 4], [3, 9], 1, False, True)]:
        hq, hkv, d = 4, 1, 64
        qo_indptr, kv_lens, plan = _plan(lens_q, lens_kv)
        kv_indptr = torch.zeros(len(lens_kv) + 1, dtype=torch.int32)
        kv_indptr[1:] = torch.cumsum(kv_lens, 0)
        n = int(kv_indptr[-1])
        shape = (n, hkv, d) if layout == 0 else (hkv, n, d)
        k, v = torch.randn(shape).half(), torch.randn(shape).half()
        q = torch.randn(sum(lens_q), hq, d, dtype=torch.float16)
        po, pl = _partials(plan, hq, d)
        mask = mask_indptr = None
        if masked:
            nbytes = [(a * b + 7) // 8 for a, b in zip(lens_q, lens_kv)]
            mask = torch.randint(0, 256, (sum(nbytes),), dtype=torch.uint8)
            mask_indptr = torch.tensor([0, nbytes[0], sum(nbytes)], dtype=torch.int32)
        yield (q, k, v, qo_indptr, kv_indptr, plan, po, pl, torch.empty_like(q), None, mask, mask_indptr,
               layout, causal, 2, 0.125, 20.0, 1.0, 1.0)


def samples_batch_decode_paged_run():
    for lens, page, layout, chunk, kv_dtype in [([7, 12, 1], 4, 0, 0, torch.float16),
                                                ([40, 3], 16, 1, 16, torch.bfloat16)]:
        hq, hkv, d = 8, 2, 64
        k, v, indptr, indices, last = _paged(lens, page, hkv, d, layout, kv_dtype)
        _, _, plan = _plan([1] * len(lens), lens, kv_chunk_size=chunk)
        q = torch.randn(len(lens), hq, d, dtype=torch.float16)
        po, pl = _partials(plan, hq, d)
        counters = torch.zeros(len(lens) * hkv, dtype=torch.int32)
        yield (q, k, v, indptr, indices, last, plan, po, pl, counters, torch.empty_like(q), torch.empty(len(lens), hq),
               layout, -1, 0.125, 0.0, 1.0, 1.0, True)


def samples_merge_state():
    for seq, h, d, dtype in [(5, 4, 64, torch.float16), (3, 2, 128, torch.bfloat16)]:
        yield (torch.randn(seq, h, d).to(dtype), torch.randn(seq, h), torch.randn(seq, h, d).to(dtype),
               torch.randn(seq, h))


def samples_merge_state_in_place():
    for seq, h, d, masked in [(5, 4, 64, False), (6, 2, 128, True)]:
        mask = torch.rand(seq) > 0.5 if masked else None
        yield (torch.randn(seq, h, d).half(), torch.randn(seq, h), torch.randn(seq, h, d).half(),
               torch.randn(seq, h), mask)


def samples_merge_states():
    for seq, n, h, d in [(5, 3, 4, 64), (2, 1, 2, 128)]:
        yield (torch.randn(seq, n, h, d).half(), torch.randn(seq, n, h))


def samples_append_paged_kv_cache():
    for lens, page, layout, cache_dtype in [([5, 9], 4, 0, torch.float16), ([3, 17], 16, 1, torch.bfloat16)]:
        h, d = 2, 64
        k, v, indptr, indices, last = _paged(lens, page, h, d, layout, cache_dtype)
        append = [2, 3]
        bi = torch.tensor([0] * append[0] + [1] * append[1], dtype=torch.int32)
        pos = torch.tensor([lens[0] - 2, lens[0] - 1, lens[1] - 3, lens[1] - 2, lens[1] - 1], dtype=torch.int32)
        yield (torch.randn(5, h, d).to(cache_dtype), torch.randn(5, h, d).to(cache_dtype), bi, pos, k.clone(), v.clone(), indices,
               indptr, last, layout, 1.0, 0.5)


def samples_get_batch_indices_positions():
    yield (torch.tensor([0, 2, 5], dtype=torch.int32), torch.tensor([4, 3], dtype=torch.int32), 5)
    yield (torch.tensor([0, 1], dtype=torch.int32), torch.tensor([9], dtype=torch.int32), 3)


def samples_get_seq_lens():
    yield (torch.tensor([0, 2, 5], dtype=torch.int32), torch.tensor([3, 16], dtype=torch.int32), 16)
    yield (torch.tensor([0, 1, 1], dtype=torch.int32), torch.tensor([1, 1], dtype=torch.int32), 1)


SAMPLES = {name[len("samples_"):]: fn for name, fn in globals().items() if name.startswith("samples_")}


def test_every_operator_has_samples():
    assert registered_ops() == sorted(SAMPLES), "every operator needs opcheck samples"


def test_every_operator_has_a_fake():
    from torch._library.simple_registry import singleton

    missing = [n for n in registered_ops() if singleton.find(f"flashinfer::{n}").fake_impl.kernel is None]
    assert not missing, f"operators without a fake in meta_kernels/: {missing}"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_opcheck(name):
    torch.manual_seed(0)
    count = 0
    for args in SAMPLES[name]():
        torch.library.opcheck(getattr(ops, name).default, args)
        count += 1
    assert count >= 2


def all_schemas() -> str:
    return "\n".join(str(getattr(ops, n).default._schema) for n in registered_ops()) + "\n"


if expecttest is not None:

    class TestSchemas(expecttest.TestCase):
        def test_schemas_pinned(self):
            # Regenerate with EXPECTTEST_ACCEPT=1 after a deliberate schema change.
            self.assertExpectedInline(all_schemas(), """\
flashinfer::append_paged_kv_cache(Tensor append_key, Tensor append_value, Tensor batch_indices, Tensor positions, Tensor(a!) paged_k_cache, Tensor(b!) paged_v_cache, Tensor kv_indices, Tensor kv_indptr, Tensor kv_last_page_len, int kv_layout, float k_scale, float v_scale, bool enable_pdl=False) -> ()
flashinfer::batch_decode_paged_run(Tensor q, Tensor paged_k, Tensor paged_v, Tensor kv_indptr, Tensor kv_indices, Tensor kv_last_page_len, Tensor plan_info, Tensor(a!) partial_o, Tensor(b!) partial_lse, Tensor(c!) split_counters, Tensor(d!) o, Tensor(e!)? maybe_lse, int kv_layout, int window_left, float sm_scale, float logits_soft_cap, float k_scale, float v_scale, bool use_tensor_cores, int task_blocks=0, bool enable_pdl=False) -> ()
flashinfer::batch_prefill_paged_run(Tensor q, Tensor paged_k, Tensor paged_v, Tensor qo_indptr, Tensor kv_indptr, Tensor kv_indices, Tensor kv_last_page_len, Tensor plan_info, Tensor(a!) partial_o, Tensor(b!) partial_lse, Tensor(c!) o, Tensor(d!)? maybe_lse, Tensor? packed_custom_mask, Tensor? mask_indptr, int kv_layout, bool causal, int window_left, float sm_scale, float logits_soft_cap, float k_scale, float v_scale, bool enable_pdl=False) -> ()
flashinfer::batch_prefill_ragged_run(Tensor q, Tensor k, Tensor v, Tensor qo_indptr, Tensor kv_indptr, Tensor plan_info, Tensor(a!) partial_o, Tensor(b!) partial_lse, Tensor(c!) o, Tensor(d!)? maybe_lse, Tensor? packed_custom_mask, Tensor? mask_indptr, int kv_layout, bool causal, int window_left, float sm_scale, float logits_soft_cap, float k_scale, float v_scale, bool enable_pdl=False) -> ()
flashinfer::get_batch_indices_positions(Tensor append_indptr, Tensor seq_lens, int nnz) -> (Tensor, Tensor)
flashinfer::get_seq_lens(Tensor kv_indptr, Tensor kv_last_page_len, int page_size) -> Tensor
flashinfer::merge_state(Tensor v_a, Tensor s_a, Tensor v_b, Tensor s_b) -> (Tensor, Tensor)
flashinfer::merge_state_in_place(Tensor(a!) v, Tensor(b!) s, Tensor v_other, Tensor s_other, Tensor? mask) -> ()
flashinfer::merge_states(Tensor v, Tensor s) -> (Tensor, Tensor)
flashinfer::plan_batch(Tensor qo_indptr, Tensor kv_lens, Tensor(a!) plan_info, int q_tile_rows, int kv_chunk_size) -> ()
flashinfer::single_decode(Tensor q, Tensor k, Tensor v, Tensor(a!) o, Tensor(b!)? maybe_lse, int kv_layout, int window_left, float sm_scale, float logits_soft_cap, float k_scale, float v_scale, bool use_tensor_cores) -> ()
flashinfer::single_prefill(Tensor q, Tensor k, Tensor v, Tensor(a!) o, Tensor(b!)? maybe_lse, Tensor? packed_custom_mask, int kv_layout, bool causal, int window_left, float sm_scale, float logits_soft_cap, float k_scale, float v_scale) -> ()
""")

else:

    @pytest.mark.skip(reason="expecttest is not installed")
    def test_schemas_pinned():
        pass
