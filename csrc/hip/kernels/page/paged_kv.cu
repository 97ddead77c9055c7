// Paged KV-cache kernels: the append scatter (16-bit caches, or FP8 caches storing
// value / scale) and the index functions around it (FlashInfer's `page` module).
//
// Request r owns pages kv_indices[kv_indptr[r] .. kv_indptr[r+1]); appended token i goes to
// position positions[i] of request batch_indices[i]. Tokens whose batch index is negative
// (padding from get_batch_indices_positions) or whose position lies outside the request's
// pages are skipped: the run path cannot raise without a host synchronisation.
#include <cstdint>
#include <type_traits>

#include "../decode/fp8.h"
#include "page_divisor.h"
#include "gpu_iface/memory.h"
#include "gpu_iface/platform.h"
#include "gpu_iface/vec_types.h"

namespace tfo::kernels {

using namespace tfo::gpu;

inline constexpr int kPageThreads = 256;

// Storage tag of an FP8 cache for the encoder.
template <Fp8Format F>
struct Fp8Store {
  static constexpr Fp8Format kFormat = F;
  uint8_t bits;
};

struct AppendParams {
  const void* key;
  const void* value;
  int64_t key_stride_token, key_stride_head, value_stride_token, value_stride_head;
  const int32_t* batch_indices;
  const int32_t* positions;
  const int32_t* kv_indices;
  const int32_t* kv_indptr;
  void* k_cache;
  void* v_cache;
  int64_t k_stride_page, k_stride_token, k_stride_head;
  int64_t v_stride_page, v_stride_token, v_stride_head;
  PageDivisor page_div;  // the page size (.size) and the division by it
  int32_t nnz, num_heads, head_dim;
  int32_t heads_per_block, grid_tokens;  // blockDim.y, gridDim.x
  float inv_k_scale, inv_v_scale;
};

template <typename Dst>
TFO_INLINE void store_converted(Dst* dst, const float* x) {
  if constexpr (std::is_same_v<Dst, half_t> || std::is_same_v<Dst, bf16_t>) {
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i] = pack2<Dst>(x[2 * i], x[2 * i + 1]);
    struct alignas(16) Chunk {
      uint32_t w[4];
    } c = {{w[0], w[1], w[2], w[3]}};
    *reinterpret_cast<Chunk*>(dst) = c;
  } else {
    uint32_t w[2] = {0u, 0u};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      w[i / 4] |= static_cast<uint32_t>(encode_fp8<Dst::kFormat>(x[i])) << (8 * (i % 4));
    }
    struct alignas(8) Chunk {
      uint32_t w[2];
    } c = {{w[0], w[1]}};
    *reinterpret_cast<Chunk*>(dst) = c;
  }
}

// The 8 elements of a loaded chunk, times scale, as float.
template <typename Src>
TFO_INLINE void widen8(const Words16& c, float scale, float* out) {
  struct alignas(16) Chunk {
    Src x[8];
  };
  const Chunk elems = *reinterpret_cast<const Chunk*>(&c);
#pragma unroll
  for (int i = 0; i < 8; ++i) out[i] = to_float(elems.x[i]) * scale;
}

// A block of (head_dim / 8) x heads_per_block threads takes one appended token at a time (grid
// stride), thread (x, y) the 8-element chunk x of heads y, y + blockDim.y, ...: no integer
// division on the way to an address (the page index is page_divisor.h's multiply and shift).
// The appended K/V are read before the page lookup (and held as loaded, 8 registers, until the
// store converts them): those reads do not depend on it, so their latency overlaps the dependent
// index loads (batch index, page offset, page id).
// 16-bit caches: registers capped at 32 per thread (a full SM of threads), so that long appends
// keep as many tokens' loads in flight as the SM holds threads; the FP8 encoders need more.
template <typename Src, typename Dst>
inline constexpr int kAppendMinBlocks = std::is_same_v<Src, Dst> ? 2048 / kPageThreads : 1;

template <typename Src, typename Dst>
TFO_GLOBAL void TFO_LAUNCH_BOUNDS_MIN_BLOCKS(kPageThreads, (kAppendMinBlocks<Src, Dst>))
    append_paged_kv_kernel(const AppendParams p) {
  const int32_t chunk = static_cast<int32_t>(thread_index_x());
  grid_dependency_wait();  // the appended K/V and the indices may come from the launch before
  for (int32_t i = static_cast<int32_t>(block_index_x()); i < p.nnz; i += p.grid_tokens) {
    const int32_t b = p.batch_indices[i];
    const int32_t pos = p.positions[i];
    for (int32_t head = static_cast<int32_t>(thread_index_y()); head < p.num_heads; head += p.heads_per_block) {
      const Words16 k_words = load_global_16b_first(static_cast<const Src*>(p.key) + i * p.key_stride_token +
                                                    head * p.key_stride_head + chunk * 8);
      const Words16 v_words = load_global_16b_first(static_cast<const Src*>(p.value) + i * p.value_stride_token +
                                                    head * p.value_stride_head + chunk * 8);
      if (b < 0 || pos < 0) continue;
      const PageSlot at = page_slot(pos, p.page_div);
      const int32_t page_idx = p.kv_indptr[b] + at.page;
      if (page_idx >= p.kv_indptr[b + 1]) continue;
      const int64_t page = p.kv_indices[page_idx];
      const int32_t slot = at.slot;
      float k[8], v[8];
      widen8<Src>(k_words, p.inv_k_scale, k);
      widen8<Src>(v_words, p.inv_v_scale, v);
      store_converted(static_cast<Dst*>(p.k_cache) + page * p.k_stride_page + slot * p.k_stride_token +
                          head * p.k_stride_head + chunk * 8,
                      k);
      store_converted(static_cast<Dst*>(p.v_cache) + page * p.v_stride_page + slot * p.v_stride_token +
                          head * p.v_stride_head + chunk * 8,
                      v);
    }
  }
  grid_dependents_launch();  // this block's stores are issued
}

// For each of nnz appended tokens: its request and its position (seq_lens are the lengths
// after the append); entries past append_indptr[batch] get -1.
TFO_GLOBAL void TFO_LAUNCH_BOUNDS(kPageThreads)
    batch_indices_positions_kernel(const int32_t* append_indptr, const int32_t* seq_lens,
                                   int32_t batch, int32_t nnz, int32_t* batch_indices,
                                   int32_t* positions) {
  const int32_t i = block_index_x() * kPageThreads + thread_index_x();
  if (i >= nnz) return;
  if (i >= append_indptr[batch]) {
    batch_indices[i] = -1;
    positions[i] = -1;
    return;
  }
  int32_t lo = 0, hi = batch;  // the last request with append_indptr[r] <= i
  while (hi - lo > 1) {
    const int32_t mid = (lo + hi) / 2;
    if (append_indptr[mid] <= i) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const int32_t appended = append_indptr[lo + 1] - append_indptr[lo];
  batch_indices[i] = lo;
  positions[i] = seq_lens[lo] - appended + (i - append_indptr[lo]);
}

// (num_pages - 1) * page_size + kv_last_page_len; a request without pages reports its
// kv_last_page_len (FlashInfer's convention).
TFO_GLOBAL void TFO_LAUNCH_BOUNDS(kPageThreads)
    seq_lens_kernel(const int32_t* kv_indptr, const int32_t* kv_last_page_len, int32_t batch,
                    int32_t page_size, int32_t* seq_lens) {
  const int32_t r = block_index_x() * kPageThreads + thread_index_x();
  if (r >= batch) return;
  const int32_t pages = kv_indptr[r + 1] - kv_indptr[r];
  seq_lens[r] = (pages > 1 ? pages - 1 : 0) * page_size + kv_last_page_len[r];
}

// The instantiations: 16-bit sources into caches of the same type or any FP8 format.
#define TFO_APPEND_INSTANCES(Src)                                                                   \
  template TFO_GLOBAL void append_paged_kv_kernel<Src, Src>(const AppendParams);                    \
  template TFO_GLOBAL void append_paged_kv_kernel<Src, Fp8Store<Fp8Format::kE4M3Fn>>(const AppendParams);   \
  template TFO_GLOBAL void append_paged_kv_kernel<Src, Fp8Store<Fp8Format::kE5M2>>(const AppendParams);     \
  template TFO_GLOBAL void append_paged_kv_kernel<Src, Fp8Store<Fp8Format::kE4M3Fnuz>>(const AppendParams); \
  template TFO_GLOBAL void append_paged_kv_kernel<Src, Fp8Store<Fp8Format::kE5M2Fnuz>>(const AppendParams);

TFO_APPEND_INSTANCES(half_t)
TFO_APPEND_INSTANCES(bf16_t)

#undef TFO_APPEND_INSTANCES

}  // namespace tfo::kernels
