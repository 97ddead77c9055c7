"""A real client: a Hugging Face Llama (small config, random weights) whose attention goes
through this library on a paged cache: prefill + greedy decode, eager and compiled,
logits matching transformers' SDPA path. Runs on the GPU where there is one (CUDA graph
capture belongs to the serving-loop tests), on the CPU otherwise; skipped without
transformers."""
import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")

from torch_flashinfer_ops import transformers_attention as tfa  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PROMPT, STEPS, BATCH = 11, 4, 2


def _models():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    tfa.register()
    # Each model gets its own config: the attention implementation is stored on it.
    ours = transformers.LlamaForCausalLM._from_config(copy.deepcopy(config), attn_implementation=tfa.ATTENTION_NAME)
    ref = transformers.LlamaForCausalLM._from_config(copy.deepcopy(config), attn_implementation="sdpa")
    assert ours.config._attn_implementation == tfa.ATTENTION_NAME
    ref.load_state_dict(ours.state_dict())
    return config, ours.to(DEVICE).eval(), ref.to(DEVICE).eval()


def _run(model, config, tokens):
    """Prefill the prompts, then decode STEPS tokens (teacher-forced with `tokens`)."""
    state = tfa.PagedServingState(config, max_pages=64, page_size=4, device=DEVICE)
    logits = []
    state.begin_step([PROMPT] * BATCH)
    pos = torch.arange(PROMPT, device=DEVICE).expand(BATCH, PROMPT)
    with torch.no_grad():
        logits.append(model(tokens[:, :PROMPT], position_ids=pos, use_cache=False, paged_state=state).logits)
        for step in range(STEPS):
            state.begin_step([1] * BATCH)
            t = PROMPT + step
            pos = torch.full((BATCH, 1), t, device=DEVICE)
            logits.append(model(tokens[:, t:t + 1], position_ids=pos, use_cache=False, paged_state=state).logits)
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("compiled", [False, True])
def test_llama_prefill_and_decode_match_sdpa(compiled):
    config, ours, ref = _models()
    # Greedy continuation from the reference model, then both score the same tokens.
    tokens = torch.randint(0, config.vocab_size, (BATCH, PROMPT), device=DEVICE)
    with torch.no_grad():
        for _ in range(STEPS):
            nxt = ref(tokens, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, nxt], dim=1)
        expected = ref(tokens[:, : PROMPT + STEPS], use_cache=False).logits
    model = torch.compile(ours, fullgraph=True) if compiled else ours
    got = _run(model, config, tokens)
    assert got.shape == expected.shape
    err = ((got - expected).norm() / expected.norm()).item()
    assert err < 5e-3, err
    assert torch.equal(got[:, PROMPT - 1:].argmax(-1), expected[:, PROMPT - 1:].argmax(-1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph capture needs a GPU")
def test_llama_decode_step_replayed_from_a_cuda_graph():
    """The serving pattern: prefill eagerly, capture one decode step, then for every later step
    re-plan (in place) and replay; the logits match the SDPA model's."""
    config, ours, ref = _models()
    tokens = torch.randint(0, config.vocab_size, (BATCH, PROMPT + STEPS), device=DEVICE)
    with torch.no_grad():
        expected = ref(tokens, use_cache=False).logits
    state = tfa.PagedServingState(config, max_pages=64, page_size=4, device=DEVICE, cuda_graph_batch=BATCH)
    state.begin_step([PROMPT] * BATCH)
    pos = torch.arange(PROMPT, device=DEVICE).expand(BATCH, PROMPT)
    static_ids = torch.zeros(BATCH, 1, dtype=torch.long, device=DEVICE)
    static_pos = torch.zeros(BATCH, 1, dtype=torch.long, device=DEVICE)

    def decode_step():
        return ours(static_ids, position_ids=static_pos, use_cache=False, paged_state=state).logits

    with torch.no_grad():
        logits = [ours(tokens[:, :PROMPT], position_ids=pos, use_cache=False, paged_state=state).logits]
        state.begin_step([1] * BATCH)
        static_ids.copy_(tokens[:, PROMPT:PROMPT + 1])
        static_pos.fill_(PROMPT)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (it writes the same K/V the replay writes)
            decode_step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_logits = decode_step()
        for step in range(STEPS):
            if step > 0:
                state.begin_step([1] * BATCH)  # pages and lengths change under the same graph
                static_ids.copy_(tokens[:, PROMPT + step:PROMPT + step + 1])
                static_pos.fill_(PROMPT + step)
            graph.replay()
            logits.append(static_logits.clone())
    got = torch.cat(logits, dim=1)
    assert got.shape == expected.shape
    err = ((got - expected).norm() / expected.norm()).item()
    assert err < 5e-3, err
