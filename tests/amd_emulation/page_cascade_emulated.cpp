// The paged-cache kernels (csrc/hip/kernels/page) and the state merges (csrc/hip/kernels/cascade)
// built on the AMD backend and run under the wave64 host emulation, launched as the bindings
// launch them (csrc/hip/bindings/page.cu, cascade.cu). Built by tests/test_amd_emulated.py.
#include "wave64_emulation.h"

#include "kernels/cascade/merge_state.cu"
#include "kernels/page/paged_kv.cu"

namespace {

using namespace tfo::kernels;
using tfo::gpu::bf16_t;
using tfo::gpu::half_t;

template <typename Src, typename Dst>
void append(AppendParams p, int grid_tokens) {
  const int chunks = p.head_dim / 8;
  p.heads_per_block = p.num_heads < kPageThreads / chunks ? p.num_heads : kPageThreads / chunks;
  p.grid_tokens = grid_tokens;
  tfo_emu::launch(grid_tokens, chunks, p.heads_per_block, [&] { append_paged_kv_kernel<Src, Dst>(p); });
}

template <typename Src>
void append_into(AppendParams p, int cache_kind, int grid_tokens) {
  switch (cache_kind) {
    case 0: return append<Src, Src>(p, grid_tokens);
    case 1: return append<Src, Fp8Store<Fp8Format::kE4M3Fn>>(p, grid_tokens);
    case 2: return append<Src, Fp8Store<Fp8Format::kE5M2>>(p, grid_tokens);
    case 3: return append<Src, Fp8Store<Fp8Format::kE4M3Fnuz>>(p, grid_tokens);
    default: return append<Src, Fp8Store<Fp8Format::kE5M2Fnuz>>(p, grid_tokens);
  }
}

// Calls go(std::type_identity<V>{}) for the value type of a state: 0 float16, 1 bfloat16, 2 float32.
template <typename Go>
void with_value_type(int dtype, Go go) {
  if (dtype == 0) go(std::type_identity<half_t>{});
  else if (dtype == 1) go(std::type_identity<bf16_t>{});
  else go(std::type_identity<float>{});
}

template <typename T>
StateView<T> state_view(T* v, int64_t v_stride_seq, int64_t v_stride_head, float* s, int64_t s_stride_seq,
                        int64_t s_stride_head) {
  return {v, v_stride_seq, v_stride_head, s, s_stride_seq, s_stride_head};
}

}  // namespace

#define TFO_EMU_EXPORT extern "C" __attribute__((visibility("default")))

// src: 0 float16, 1 bfloat16; cache_kind: 0 src's type, 1 e4m3fn, 2 e5m2, 3 e4m3fnuz, 4 e5m2fnuz.
TFO_EMU_EXPORT void tfo_emu_append(int src, int cache_kind, int grid_tokens, const void* key, const void* value,
                                   int64_t key_stride_token, int64_t key_stride_head, int64_t value_stride_token,
                                   int64_t value_stride_head, const int32_t* batch_indices,
                                   const int32_t* positions, const int32_t* kv_indices, const int32_t* kv_indptr,
                                   void* k_cache, void* v_cache, int64_t k_stride_page, int64_t k_stride_token,
                                   int64_t k_stride_head, int64_t v_stride_page, int64_t v_stride_token,
                                   int64_t v_stride_head, int page_size, int nnz, int num_heads, int head_dim,
                                   float inv_k_scale, float inv_v_scale) {
  AppendParams p{};
  p.key = key;
  p.value = value;
  p.key_stride_token = key_stride_token;
  p.key_stride_head = key_stride_head;
  p.value_stride_token = value_stride_token;
  p.value_stride_head = value_stride_head;
  p.batch_indices = batch_indices;
  p.positions = positions;
  p.kv_indices = kv_indices;
  p.kv_indptr = kv_indptr;
  p.k_cache = k_cache;
  p.v_cache = v_cache;
  p.k_stride_page = k_stride_page;
  p.k_stride_token = k_stride_token;
  p.k_stride_head = k_stride_head;
  p.v_stride_page = v_stride_page;
  p.v_stride_token = v_stride_token;
  p.v_stride_head = v_stride_head;
  p.page_div = make_page_divisor(page_size);
  p.nnz = nnz;
  p.num_heads = num_heads;
  p.head_dim = head_dim;
  p.inv_k_scale = inv_k_scale;
  p.inv_v_scale = inv_v_scale;
  if (src == 0) append_into<half_t>(p, cache_kind, grid_tokens);
  else append_into<bf16_t>(p, cache_kind, grid_tokens);
}

TFO_EMU_EXPORT void tfo_emu_batch_indices_positions(const int32_t* append_indptr, const int32_t* seq_lens,
                                                    int batch, int nnz, int32_t* batch_indices,
                                                    int32_t* positions) {
  tfo_emu::launch((nnz + kPageThreads - 1) / kPageThreads, kPageThreads, 1, [&] {
    batch_indices_positions_kernel(append_indptr, seq_lens, batch, nnz, batch_indices, positions);
  });
}

TFO_EMU_EXPORT void tfo_emu_seq_lens(const int32_t* kv_indptr, const int32_t* kv_last_page_len, int batch,
                                     int page_size, int32_t* seq_lens) {
  tfo_emu::launch((batch + kPageThreads - 1) / kPageThreads, kPageThreads, 1,
                  [&] { seq_lens_kernel(kv_indptr, kv_last_page_len, batch, page_size, seq_lens); });
}

// page_divisor.h as the kernels use it: (page, slot) of each position for a page size.
TFO_EMU_EXPORT void tfo_emu_page_slots(int page_size, const int32_t* positions, int count, int32_t* pages,
                                       int32_t* slots) {
  const PageDivisor div = make_page_divisor(page_size);
  for (int i = 0; i < count; ++i) {
    const PageSlot at = page_slot(positions[i], div);
    pages[i] = at.page;
    slots[i] = at.slot;
  }
}

// Contiguous states: v [seq, heads, dim] of the value type (with_value_type),
// s [seq, heads]; out may alias a (in place); mask [seq] or null.
TFO_EMU_EXPORT void tfo_emu_merge_two(int dtype, void* va, float* sa, void* vb, float* sb, void* vo, float* so,
                                      const bool* mask, int seq_len, int num_heads, int head_dim) {
  auto go = [&](auto t_tag) {
    using T = typename decltype(t_tag)::type;
    MergeTwoParams<T> p{};
    const int64_t vs = static_cast<int64_t>(num_heads) * head_dim;
    p.a = state_view(static_cast<T*>(va), vs, head_dim, sa, num_heads, 1);
    p.b = state_view(static_cast<T*>(vb), vs, head_dim, sb, num_heads, 1);
    p.out = state_view(static_cast<T*>(vo), vs, head_dim, so, num_heads, 1);
    p.mask = mask;
    p.seq_len = seq_len;
    p.num_heads = num_heads;
    p.head_dim = head_dim;
    const int rows = seq_len * num_heads;
    tfo_emu::launch((rows + kMergeStateWaves - 1) / kMergeStateWaves, kMergeStateThreads, 1,
                    [&] { merge_two_states_kernel<T>(p); });
  };
  with_value_type(dtype, go);
}

// Contiguous v [seq, num_states, heads, dim], s [seq, num_states, heads] into out_v [seq, heads,
// dim], out_s [seq, heads].
TFO_EMU_EXPORT void tfo_emu_merge_many(int dtype, const void* v, const float* s, void* out_v, float* out_s,
                                       int seq_len, int num_states, int num_heads, int head_dim) {
  auto go = [&](auto t_tag) {
    using T = typename decltype(t_tag)::type;
    MergeManyParams<T> p{};
    p.v = static_cast<const T*>(v);
    p.v_stride_head = head_dim;
    p.v_stride_state = static_cast<int64_t>(num_heads) * head_dim;
    p.v_stride_seq = p.v_stride_state * num_states;
    p.s = s;
    p.s_stride_head = 1;
    p.s_stride_state = num_heads;
    p.s_stride_seq = static_cast<int64_t>(num_heads) * num_states;
    p.out_v = static_cast<T*>(out_v);
    p.out_s = out_s;
    p.seq_len = seq_len;
    p.num_states = num_states;
    p.num_heads = num_heads;
    p.head_dim = head_dim;
    const int rows = seq_len * num_heads;
    tfo_emu::launch((rows + kMergeStateWaves - 1) / kMergeStateWaves, kMergeStateThreads, 1,
                    [&] { merge_many_states_kernel<T>(p); });
  };
  with_value_type(dtype, go);
}
