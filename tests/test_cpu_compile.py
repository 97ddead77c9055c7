"""torch.compile(fullgraph=True) of a small decoder attention block whose attention is
the wrappers' run() on a paged cache (CPU; the recompilation check also on the GPU): no graph
breaks, same result as eager."""
import pytest
import torch

import torch_flashinfer_ops as flashinfer

from reference import attention_ref  # noqa: E402

HQ, HKV, D, PAGE = 4, 2, 64, 16


class AttentionBlock(torch.nn.Module):
    """RMSNorm -> QKV projection -> paged attention (prefill or decode) -> output projection."""

    def __init__(self, hidden=128):
        super().__init__()
        self.norm = torch.nn.RMSNorm(hidden)
        self.qkv = torch.nn.Linear(hidden, (HQ + 2 * HKV) * D, bias=False)
        self.proj = torch.nn.Linear(HQ * D, hidden, bias=False)

    def forward(self, x, wrapper, kv_cache, batch_indices, positions, kv_indices, kv_indptr, kv_last_page_len):
        h = self.norm(x)
        q, k, v = self.qkv(h).split([HQ * D, HKV * D, HKV * D], dim=-1)
        q = q.reshape(-1, HQ, D).half()
        k = k.reshape(-1, HKV, D).half()
        v = v.reshape(-1, HKV, D).half()
        flashinfer.append_paged_kv_cache(k, v, batch_indices, positions, kv_cache, kv_indices, kv_indptr,
                                         kv_last_page_len)
        o = wrapper.run(q, kv_cache)
        return x + self.proj(o.reshape(-1, HQ * D).float())


def _batch(kv_lens):
    pages = [(n + PAGE - 1) // PAGE for n in kv_lens]
    indptr = torch.zeros(len(kv_lens) + 1, dtype=torch.int32)
    indptr[1:] = torch.cumsum(torch.tensor(pages), 0)
    indices = torch.randperm(int(indptr[-1])).to(torch.int32)
    last = torch.tensor([(n - 1) % PAGE + 1 for n in kv_lens], dtype=torch.int32)
    return indptr, indices, last


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_compiled_block_matches_eager(phase):
    torch.manual_seed(0)
    block = AttentionBlock()
    kv_lens = [37, 5, 16]
    append_lens = kv_lens if phase == "prefill" else [1, 1, 1]
    kv_indptr, kv_indices, last = _batch(kv_lens)
    append_indptr = torch.zeros(len(kv_lens) + 1, dtype=torch.int32)
    append_indptr[1:] = torch.cumsum(torch.tensor(append_lens), 0)
    nnz = int(append_indptr[-1])
    seq_lens = flashinfer.get_seq_lens(kv_indptr, last, PAGE)
    batch_indices, positions = flashinfer.get_batch_indices_positions(append_indptr, seq_lens, nnz)
    workspace = torch.empty(16 << 20, dtype=torch.uint8)
    if phase == "prefill":
        wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
        wrapper.plan(append_indptr, kv_indptr, kv_indices, last, HQ, HKV, D, PAGE, causal=True)
    else:
        wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
        wrapper.plan(kv_indptr, kv_indices, last, HQ, HKV, D, PAGE)
    cache0 = torch.randn(int(kv_indptr[-1]), 2, PAGE, HKV, D).half()
    x = torch.randn(nnz, 128)
    args = (wrapper,)
    rest = (batch_indices, positions, kv_indices, kv_indptr, last)

    cache_eager = cache0.clone()
    with torch.no_grad():
        eager = block(x, *args, cache_eager, *rest)
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True)
    cache_compiled = cache0.clone()
    with torch.no_grad():
        out = compiled(x, *args, cache_compiled, *rest)
    torch.testing.assert_close(out, eager, rtol=2e-3, atol=2e-3)
    # Inductor fuses the projections differently, so the appended K/V differ by rounding.
    torch.testing.assert_close(cache_compiled.float(), cache_eager.float(), rtol=2e-3, atol=2e-3)

    # And the attention itself is right: check request 0 against the float64 reference.
    with torch.no_grad():
        h = block.norm(x)
        q, k, v = block.qkv(h).split([HQ * D, HKV * D, HKV * D], dim=-1)
    pages = kv_indices[kv_indptr[0]:kv_indptr[1]].long()
    k_all = cache_eager[pages, 0].reshape(-1, HKV, D)[: kv_lens[0]]
    v_all = cache_eager[pages, 1].reshape(-1, HKV, D)[: kv_lens[0]]
    n0 = append_lens[0]
    ref, _ = attention_ref(q[:n0].reshape(-1, HQ, D).half(), k_all, v_all, causal=True)
    got = wrapper.run(q.reshape(-1, HQ, D).half(), cache_eager)[:n0]
    assert ((got.double() - ref).norm() / ref.norm()) < 5e-3


def test_no_graph_breaks_in_run():
    torch.manual_seed(1)
    kv_indptr, kv_indices, last = _batch([20, 3])
    workspace = torch.empty(16 << 20, dtype=torch.uint8)
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
    wrapper.plan(kv_indptr, kv_indices, last, HQ, HKV, D, PAGE)
    cache = torch.randn(int(kv_indptr[-1]), 2, PAGE, HKV, D).half()
    q = torch.randn(2, HQ, D).half()
    explanation = torch._dynamo.explain(lambda q, c: wrapper.run(q, c))(q, cache)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def _plan_inputs(kv_lens, num_pages):
    pages = [(n + PAGE - 1) // PAGE for n in kv_lens]
    indptr = torch.zeros(len(kv_lens) + 1, dtype=torch.int32)
    indptr[1:] = torch.cumsum(torch.tensor(pages), 0)
    indices = torch.randperm(num_pages)[: sum(pages)].to(torch.int32)
    last = torch.tensor([(n - 1) % PAGE + 1 for n in kv_lens], dtype=torch.int32)
    return indptr, indices, last


DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA/HIP GPU")])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_no_recompilation_when_batch_composition_changes(phase, device):
    """Same shapes in, new plan: the compiled step is reused (index arrays are dynamic)."""
    import torch._dynamo.testing

    torch._dynamo.reset()
    torch.manual_seed(2)
    num_pages = 128
    cache = torch.randn(num_pages, 2, PAGE, HKV, D).half().to(device)
    workspace = torch.empty(16 << 20, dtype=torch.uint8, device=device)
    if phase == "decode":
        wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
    else:
        wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
    counter = torch._dynamo.testing.CompileCounter()
    step = torch.compile(lambda q, c: wrapper.run(q, c) * 2, backend=counter, fullgraph=True)
    compositions = ([20, 3, 50], [70, 1, 33], [5, 5, 500], [16, 17, 18])
    qo_splits = ([4, 4, 4], [1, 10, 1], [6, 3, 3], [12, 0, 0])
    for kv_lens, qo_lens in zip(compositions, qo_splits):
        indptr, indices, last = _plan_inputs(kv_lens, num_pages)
        if phase == "decode":
            wrapper.plan(indptr, indices, last, HQ, HKV, D, PAGE)
            q = torch.randn(len(kv_lens), HQ, D).half().to(device)
        else:
            qo_indptr = torch.tensor([0] + torch.cumsum(torch.tensor(qo_lens), 0).tolist(), dtype=torch.int32)
            wrapper.plan(qo_indptr, indptr, indices, last, HQ, HKV, D, PAGE, causal=True)
            q = torch.randn(sum(qo_lens), HQ, D).half().to(device)
        torch.testing.assert_close(step(q, cache), wrapper.run(q, cache) * 2, rtol=0, atol=0)
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} frames for {len(compositions)} plans"


def test_decode_launch_size_is_not_a_compiled_constant(monkeypatch):
    """On a GPU, plan() sizes the decode launch (task_blocks, a host integer that changes with the
    batch composition). A compiled run() must not read it: traced, it is a constant the graph guards
    on, so every new plan would recompile. The CPU plans carry 0, so the test gives them sizes."""
    import dataclasses
    import types
    import torch._dynamo.testing
    from torch_flashinfer_ops import decode as decode_module

    torch._dynamo.reset()
    torch.manual_seed(4)
    launched = []
    real_ops = decode_module.ops

    def recording_run(*args):
        launched.append(args[-2])  # task_blocks, before enable_pdl
        return real_ops.batch_decode_paged_run(*args)

    recording_ops = types.SimpleNamespace(batch_decode_paged_run=recording_run)

    cache = torch.randn(64, 2, PAGE, HKV, D).half()
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(torch.empty(16 << 20, dtype=torch.uint8), "NHD")
    counter = torch._dynamo.testing.CompileCounter()
    step = torch.compile(lambda q, c: wrapper.run(q, c) * 2, backend=counter, fullgraph=True)
    for task_blocks, kv_lens in ((3, [20, 3, 50]), (17, [70, 1, 33]), (5, [5, 5, 500])):
        wrapper.plan(*_plan_inputs(kv_lens, 64), HQ, HKV, D, PAGE)
        wrapper._plan = dataclasses.replace(wrapper._plan, task_blocks=task_blocks)
        q = torch.randn(len(kv_lens), HQ, D).half()
        monkeypatch.setattr(decode_module, "ops", recording_ops)
        eager = wrapper.run(q, cache)
        monkeypatch.setattr(decode_module, "ops", real_ops)
        torch.testing.assert_close(step(q, cache), eager * 2, rtol=0, atol=0)
        assert launched[-1] == task_blocks  # eager runs launch the plan's size
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} frames for 3 plans"


@pytest.mark.parametrize("device", DEVICES)
def test_single_request_operators_compile_with_fullgraph(device):
    """single_prefill_with_kv_cache and single_decode_with_kv_cache inside torch.compile(fullgraph
    =True): the backend choice is made at trace time (no host call left in the graph), the
    result matches eager, and new lengths reuse the graph after one automatic-dynamic recompile."""
    import torch._dynamo.testing

    torch._dynamo.reset()
    torch.manual_seed(3)
    counter = torch._dynamo.testing.CompileCounter()

    def step(q, k, v, q1):
        out = flashinfer.single_prefill_with_kv_cache(q, k, v, causal=True)
        dec, lse = flashinfer.single_decode_with_kv_cache(q1, k, v, return_lse=True)
        return out * 2, dec + 1, lse

    compiled = torch.compile(step, backend=counter, fullgraph=True)
    for qo_len, kv_len in ((8, 16), (5, 24), (7, 40), (3, 9)):
        q = torch.randn(qo_len, HQ, D).half().to(device)
        k, v = (torch.randn(kv_len, HKV, D).half().to(device) for _ in range(2))
        q1 = torch.randn(HQ, D).half().to(device)
        for got, want in zip(compiled(q, k, v, q1), step(q, k, v, q1)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert counter.frame_count <= 2, counter.frame_count  # the static first trace, then one dynamic


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_compiled_run_writes_the_workspace_in_place(phase):
    """run() writes the split-KV partial results (and, in decode, the split counters) in place:
    the compiled code copies no workspace region around the call. (Were two written tensors
    views of one storage, inductor would clone that storage from its start up to one of them
    and copy it back on every call: megabytes per layer and step.)"""
    from torch._inductor.utils import run_and_get_code

    kv_lens = [300, 5, 40]
    kv_indptr, kv_indices, last = _batch(kv_lens)
    cache = torch.randn(int(kv_indptr[-1]), 2, PAGE, HKV, D).half()
    workspace = torch.empty(16 << 20, dtype=torch.uint8)
    if phase == "prefill":
        qo_indptr = torch.tensor([0, 7, 8, 20], dtype=torch.int32)
        wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
        wrapper.plan(qo_indptr, kv_indptr, kv_indices, last, HQ, HKV, D, PAGE, causal=True)
        rows = int(qo_indptr[-1])
    else:
        wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
        wrapper.plan(kv_indptr, kv_indices, last, HQ, HKV, D, PAGE)
        rows = len(kv_lens)
    q = torch.randn(rows, HQ, D).half()
    eager = wrapper.run(q, cache)
    torch._dynamo.reset()
    out, codes = run_and_get_code(torch.compile(lambda x: wrapper.run(x, cache) * 2, fullgraph=True), q)
    torch.testing.assert_close(out, eager * 2)
    assert codes and not any("clone" in code for code in codes), "a workspace region is copied around run()"


def test_plans_after_a_compiled_run_are_made_for_the_whole_grid(monkeypatch):
    """A compiled run() launches the whole persistent grid whatever the plan (its size would be a
    traced constant), so once a wrapper's run() has been compiled its later plans are made for
    that launch (decode_task_blocks False, no wide shape), as a CUDA-graph wrapper's are; the
    flag set while tracing must survive into eager plan() calls, without a recompile."""
    import torch._dynamo.testing
    from torch_flashinfer_ops._plan import Workspace

    torch._dynamo.reset()
    torch.manual_seed(6)
    asked = []
    schedule = Workspace.plan

    def recording(self, *a, **kw):
        asked.append(kw.get("decode_task_blocks"))
        return schedule(self, *a, **kw)
    monkeypatch.setattr(Workspace, "plan", recording)
    cache = torch.randn(64, 2, PAGE, HKV, D).half()
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(torch.empty(16 << 20, dtype=torch.uint8), "NHD")
    eager_only = flashinfer.BatchDecodeWithPagedKVCacheWrapper(torch.empty(16 << 20, dtype=torch.uint8), "NHD")
    counter = torch._dynamo.testing.CompileCounter()
    step = torch.compile(lambda q, c: wrapper.run(q, c) * 2, backend=counter, fullgraph=True)
    for kv_lens in ([20, 3, 50], [70, 1, 33], [5, 5, 500]):
        inputs = _plan_inputs(kv_lens, 64)
        for w in (wrapper, eager_only):
            w.plan(*inputs, HQ, HKV, D, PAGE)
        q = torch.randn(len(kv_lens), HQ, D).half()
        torch.testing.assert_close(step(q, cache), eager_only.run(q, cache) * 2, rtol=0, atol=0)
    assert asked[0::2] == [True, False, False]  # the compiled wrapper: eager until its first compiled run
    assert asked[1::2] == [True, True, True]
    assert counter.frame_count == 1
    torch._dynamo.reset()
    wrapper._runs_compiled = False
    wrapper.run(q, cache)  # an eager run sets nothing
    assert not wrapper._runs_compiled
