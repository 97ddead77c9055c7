"""The release blog's batched paged-prefill snippet, with only the import changed.

Runs on the machine's GPU when there is one, else on the CPU. BACKEND: "aiter" where
AITER is available, else "auto".
"""
import os

import torch

import torch_flashinfer_ops as flashinfer

device = "cuda" if torch.cuda.is_available() else "cpu"
backend = os.environ.get("TFO_EXAMPLE_BACKEND", "auto")

batch_size = 4
seq_len = 512  # Sequence length per request
page_size = 16  # KV cache page size
num_qo_heads = 32  # Number of query/output heads
num_kv_heads = 8  # Number of KV heads (GQA)
head_dim = 128

# Calculate paging parameters
num_pages_per_seq = (seq_len + page_size - 1) // page_size
total_pages = num_pages_per_seq * batch_size

# Flattened query tensor: all sequences concatenated
q = torch.randn(batch_size * seq_len, num_qo_heads, head_dim, dtype=torch.float16, device=device)

# Paged KV cache: [total_pages, 2, page_size, num_kv_heads, head_dim]
kv_data = torch.randn(total_pages, 2, page_size, num_kv_heads, head_dim, dtype=torch.float16, device=device)

# Index pointers and page table metadata
q_indptr = torch.arange(0, batch_size + 1, dtype=torch.int32, device=device) * seq_len
kv_indptr = torch.arange(0, batch_size + 1, dtype=torch.int32, device=device) * num_pages_per_seq
kv_indices = torch.arange(0, total_pages, dtype=torch.int32, device=device)
kv_last_page_len = torch.full((batch_size,), (seq_len - 1) % page_size + 1, dtype=torch.int32, device=device)

# Create workspace and wrapper
workspace = torch.empty(512 * 1024 * 1024, dtype=torch.int8, device=device)
wrapper = flashinfer.prefill.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD", backend=backend)

# Plan the batched operation
wrapper.plan(
    q_indptr, kv_indptr, kv_indices, kv_last_page_len,
    num_qo_heads, num_kv_heads, head_dim, page_size,
    causal=True
)

# Execute batched prefill
output = wrapper.run(q, kv_data)

# Check request 2 against PyTorch's SDPA on its own pages.
r = 2
pages = kv_indices[kv_indptr[r]:kv_indptr[r + 1]]
k = kv_data[pages, 0].reshape(-1, num_kv_heads, head_dim)[:seq_len]
v = kv_data[pages, 1].reshape(-1, num_kv_heads, head_dim)[:seq_len]
qr = q[r * seq_len:(r + 1) * seq_len]
ref = torch.nn.functional.scaled_dot_product_attention(
    qr.transpose(0, 1).float(), k.transpose(0, 1).float(), v.transpose(0, 1).float(),
    is_causal=True, enable_gqa=True,
).transpose(0, 1)
err = ((output[r * seq_len:(r + 1) * seq_len].float() - ref).norm() / ref.norm()).item()
print(f"batch paged prefill on {device} (backend={backend}): output {tuple(output.shape)} {output.dtype}, "
      f"request {r} relative error vs SDPA {err:.2e}")
assert err < 5e-3
