"""The release blog's single-request prefill snippet, with only the import changed.

Runs on the machine's GPU when there is one, else on the CPU. BACKEND: "aiter" where
AITER is available (ROCm, or its Triton kernels on NVIDIA when opted in), else "auto".
"""
import os

import torch

import torch_flashinfer_ops as flashinfer

device = "cuda" if torch.cuda.is_available() else "cpu"
backend = os.environ.get("TFO_EXAMPLE_BACKEND", "auto")

# Configuration
seq_len = 1024  # Prompt length
num_qo_heads = 32  # Number of query/output heads
num_kv_heads = 8  # Number of KV heads (GQA with 4:1 ratio)
head_dim = 128

# Create Q, K, V tensors (NHD layout: sequence, heads, dimension)
q = torch.randn(seq_len, num_qo_heads, head_dim, dtype=torch.float16, device=device)
k = torch.randn(seq_len, num_kv_heads, head_dim, dtype=torch.float16, device=device)
v = torch.randn(seq_len, num_kv_heads, head_dim, dtype=torch.float16, device=device)

# Run single prefill attention with causal masking
output = flashinfer.single_prefill_with_kv_cache(q, k, v, causal=True, backend=backend)

# Check against PyTorch's SDPA on the same inputs.
ref = torch.nn.functional.scaled_dot_product_attention(
    q.transpose(0, 1).float(), k.transpose(0, 1).float(), v.transpose(0, 1).float(),
    is_causal=True, enable_gqa=True,
).transpose(0, 1)
err = ((output.float() - ref).norm() / ref.norm()).item()
print(f"single prefill on {device} (backend={backend}): output {tuple(output.shape)} {output.dtype}, "
      f"relative error vs SDPA {err:.2e}")
assert err < 5e-3
