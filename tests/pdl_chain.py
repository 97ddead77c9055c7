"""Programmatic dependent launch in the GPU tests: whether the device has it, and the check that
a chain of launches, each reading what the kernel before it wrote, gives the same bits with it as
without, eager and captured in a CUDA graph."""
import torch


def device_has_pdl() -> bool:
    """NVIDIA sm_90 or newer."""
    return torch.cuda.is_available() and torch.version.hip is None and torch.cuda.get_device_capability()[0] >= 9


def attention_chain(run, q0, steps=4):
    """chain(pdl): `steps` calls run(q, pdl), each q computed by a kernel from the call before's
    output, so every launch reads what the kernel right before it wrote."""

    def chain(pdl):
        q, outs = q0, []
        for _ in range(steps):
            outs.append(run(q, pdl))
            q = outs[-1] * 4 + q0
        return outs

    return chain


def _same_bits(got, want):
    return got.shape == want.shape and torch.equal(got.contiguous().view(torch.uint8),
                                                   want.contiguous().view(torch.uint8))


def assert_pdl_chain_matches(chain, want, poison=lambda: None):
    """chain(pdl) returns tensors; `want` is chain(False)'s. With enable_pdl=True, eager and then
    captured in a CUDA graph (warm-up on a side stream, as capture requires), chain's tensors have
    want's bits. poison() resets the state the chain reads or updates; it runs before the eager
    chain and before the replay, when the graph's outputs are set to NaN as well."""
    poison()
    for got, expected in zip(chain(True), want):
        assert _same_bits(got, expected)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        chain(True)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = chain(True)
    poison()
    for t in static:
        t.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    for got, expected in zip(static, want):
        assert _same_bits(got, expected)


def late_copy(src, dst, sleeps=8):
    """dst.copy_(src) (int32, contiguous) by a kernel that lets the next launch begin as it
    starts (griddepcontrol.launch_dependents) and stores only after `sleeps` naps of ~0.1 ms:
    a programmatic dependent launch after it that reads dst before its wait for this kernel
    sees dst's old contents, every time, not only when the scheduler happens to start it early.
    Needs Triton (NVIDIA sm_90+)."""
    import triton
    import triton.language as tl

    global _late_copy_kernel
    if _late_copy_kernel is None:
        @triton.jit
        def kernel(src_ptr, dst_ptr, n, SLEEPS: tl.constexpr, BLOCK: tl.constexpr):
            tl.extra.cuda.gdc_launch_dependents()
            offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            mask = offs < n
            x = tl.load(src_ptr + offs, mask=mask, other=0)
            for _ in tl.static_range(SLEEPS):
                # The nap takes x and gives it back, so the store waits for every nap.
                x = tl.inline_asm_elementwise("nanosleep.u32 100000;\n\tmov.b32 $0, $1;", "=r,r", [x],
                                              dtype=tl.int32, is_pure=False, pack=1)
            tl.store(dst_ptr + offs, x, mask=mask)

        _late_copy_kernel = kernel
    assert src.dtype == dst.dtype == torch.int32 and src.is_contiguous() and dst.is_contiguous()
    n = src.numel()
    block = 1024
    _late_copy_kernel[(triton.cdiv(n, block),)](src, dst, n, SLEEPS=sleeps, BLOCK=block)


_late_copy_kernel = None
