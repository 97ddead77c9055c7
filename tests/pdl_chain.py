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
