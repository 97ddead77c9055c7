// Batch / single decode on the matrix cores (use_tensor_cores=True).
//
// The query heads of one kv head's GQA group form the rows of a 16-row tile (padded with zero
// rows), so a decode step is a skinny attention tile: per kv tile of kTokens rows,
//
//   S (16 x 16 per wave) = Q (16 x D) . K_wᵀ        wave w owns tokens [16w, 16w + 16)
//   P = 2^(S - m)  (online softmax per wave, P rounded to T through shared memory)
//   O_w (16 x D) += P . V_w
//
// with the fragment interface (mma.sync on NVIDIA, MFMA on AMD). Each wave keeps its own
// (m, l, O) over the tokens it owns; the waves merge through shared memory at the end. FP8 KV
// is widened to T on its way into shared memory (exact: decode_common.h's scaled binary16).
#include "decode_common.h"
#include "gpu_iface/memory.h"
#include "gpu_iface/mma.h"

namespace tfo::kernels {

template <int D>
struct MmaDecodeShape {
  static constexpr int kWaves = D >= 256 ? 2 : 4;
  static constexpr int kThreads = kWaves * kWaveSize;
  static constexpr int kTokens = 16 * kWaves;
  static constexpr int kRows = 16;
};

template <int D>
inline constexpr int kMmaDecodeThreads = MmaDecodeShape<D>::kThreads;

template <typename T, int D>
struct alignas(16) MmaDecodeSmem {
  using Shape = MmaDecodeShape<D>;
  T q[Shape::kRows * D];
  union {
    struct {
      T k[Shape::kTokens * D];
      T v[Shape::kTokens * D];
    } kv;
    float o[Shape::kWaves][Shape::kRows * D];
  } u;
  T p[Shape::kWaves][16 * 16];
  float m[Shape::kWaves][Shape::kRows];
  float l[Shape::kWaves][Shape::kRows];
};

// One 16-byte chunk (8 elements) of a K or V row into a T tile: an asynchronous copy for
// 16-bit KV, a load-convert-store for FP8 (whose decode factor the scales carry).
template <typename T, typename KV>
TFO_INLINE void kv_chunk_to_shared(T* smem, const void* base, int64_t offset, bool in_bounds) {
  if constexpr (!kIsFp8<KV>) {
    copy_global_to_shared_16b(smem, static_cast<const KV*>(base) + offset, in_bounds);
  } else {
    float f[8];
    if (in_bounds) {
      kv8_to_float<KV>(load_kv8<KV>(base, offset), f);
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) f[i] = 0.f;
    }
    KvVec8<T> packed;
#pragma unroll
    for (int i = 0; i < 4; ++i) packed.w[i] = pack2<T>(f[2 * i], f[2 * i + 1]);
    *reinterpret_cast<KvVec8<T>*>(smem) = packed;
  }
}

template <typename T, typename KV, int D>
TFO_GLOBAL void TFO_LAUNCH_BOUNDS(kMmaDecodeThreads<D>) decode_mma_kernel(const DecodeParams p) {
  using Shape = MmaDecodeShape<D>;
  constexpr int kWaves = Shape::kWaves;
  constexpr int kThreads = Shape::kThreads;
  constexpr int kTokens = Shape::kTokens;
  constexpr int kRows = Shape::kRows;
  constexpr int kChunks = D / 8;
  constexpr int kColTiles = D / 16;
  using QTile = SmemTile<T, kRows, D>;
  using KvTile = SmemTile<T, kTokens, D>;
  using PTile = SmemTile<T, 16, 16>;

  TFO_SHARED MmaDecodeSmem<T, D> smem;
  const QTile q_tile{smem.q};
  const KvTile k_tile{smem.u.kv.k};
  const KvTile v_tile{smem.u.kv.v};
  const int tid = thread_index_x();
  const int wave = wave_index();
  const int lane = lane_id();
  const PTile p_tile{smem.p[wave]};

  const int32_t num_tasks = schedule_num_items(p) * p.num_kv_heads * p.head_slices;
  for (int32_t task = block_index_x(); task < num_tasks; task += p.num_blocks) {
    const TaskHeads t = decode_task(p, task, kRows);
    const int32_t req = t.item.request;
    const int32_t kv_len = request_kv_len(p, req);
    int32_t kv_lo = t.item.kv_begin;
    const int32_t kv_hi = t.item.kv_end < kv_len ? t.item.kv_end : kv_len;
    if (p.window_left >= 0 && kv_len - 1 - p.window_left > kv_lo) kv_lo = kv_len - 1 - p.window_left;

    block_sync();  // the previous task is done with shared memory
    const T* q_req = static_cast<const T*>(p.q) + static_cast<int64_t>(req) * p.q_stride_batch;
    for (int idx = tid; idx < kRows * kChunks; idx += kThreads) {
      const int row = idx / kChunks, chunk = idx % kChunks;
      const bool in = row < t.num_heads;
      const int head = in ? t.first_head + row : t.first_head;
      copy_global_to_shared_16b(q_tile.chunk_ptr(row, chunk),
                                q_req + head * p.q_stride_head + chunk * 8, in);
    }
    copy_commit_group();

    const int32_t* pages = request_pages(p, req);
    FragC o_acc[kColTiles];
#pragma unroll
    for (int n = 0; n < kColTiles; ++n) {
#pragma unroll
      for (int e = 0; e < kAccElems; ++e) o_acc[n].v[e] = 0.f;
    }
    RowVals m_run = row_vals_filled(kNegInf);
    RowVals l_run = row_vals_filled(0.f);

    for (int32_t tile0 = kv_lo; tile0 < kv_hi; tile0 += kTokens) {
      block_sync();  // every wave is done with the previous K/V tile
      for (int idx = tid; idx < kTokens * kChunks; idx += kThreads) {
        const int row = idx / kChunks, chunk = idx % kChunks;
        const int32_t pos = tile0 + row;
        const bool in = pos < kv_hi;
        const KvOffsets off = kv_offsets(p, pages, in ? pos : kv_hi - 1, t.kv_head);
        kv_chunk_to_shared<T, KV>(k_tile.chunk_ptr(row, chunk), p.k, off.k + chunk * 8, in);
        kv_chunk_to_shared<T, KV>(v_tile.chunk_ptr(row, chunk), p.v, off.v + chunk * 8, in);
      }
      copy_commit_group();
      copy_wait_groups<0>();
      block_sync();

      FragC s[1];
#pragma unroll
      for (int e = 0; e < kAccElems; ++e) s[0].v[e] = 0.f;
#pragma unroll
      for (int k0 = 0; k0 < D; k0 += 32) {
        FragA<T, 32> a;
        FragB<T, 32> b;
        load_a(a, q_tile, 0, k0);
        load_b_nk(b, k_tile, 16 * wave, k0);
        mma(s[0], a, b);
      }
#pragma unroll
      for (int e = 0; e < kAccElems; ++e) {
        const int32_t pos = tile0 + 16 * wave + acc_col(lane, e);
        const float x = soft_cap_score(s[0].v[e] * p.q_scale, p.cap_log2);
        s[0].v[e] = pos < kv_hi ? x : kNegInf;
      }
      const RowVals tile_max = row_max(s);
      RowVals m_use, rescale;
#pragma unroll
      for (int r = 0; r < kAccRowsPerLane; ++r) {
        const float m_new = max_f32(m_run.v[r], tile_max.v[r]);
        m_use.v[r] = max_f32(m_new, kMaxFloor);
        rescale.v[r] = fast_exp2(m_run.v[r] - m_use.v[r]);
        m_run.v[r] = m_new;
      }
#pragma unroll
      for (int e = 0; e < kAccElems; ++e) s[0].v[e] = fast_exp2(s[0].v[e] - m_use.v[acc_row_slot(e)]);
      const RowVals tile_sum = row_sum(s);
#pragma unroll
      for (int r = 0; r < kAccRowsPerLane; ++r) l_run.v[r] = l_run.v[r] * rescale.v[r] + tile_sum.v[r];
#pragma unroll
      for (int n = 0; n < kColTiles; ++n) {
#pragma unroll
        for (int e = 0; e < kAccElems; ++e) o_acc[n].v[e] *= rescale.v[acc_row_slot(e)];
      }

      // P to the A-operand layout through this wave's 16 x 16 tile.
#pragma unroll
      for (int e = 0; e < kAccElems; ++e) {
        *p_tile.ptr(acc_row(lane, e), acc_col(lane, e)) = from_float<T>(s[0].v[e]);
      }
      wave_sync();
      FragA<T, 16> pa;
      load_a(pa, p_tile, 0, 0);
#pragma unroll
      for (int n = 0; n < kColTiles; ++n) {
        FragB<T, 16> vb;
        load_b_kn(vb, v_tile, 16 * wave, 16 * n);
        mma(o_acc[n], pa, vb);
      }
      wave_sync();
    }
    copy_wait_groups<0>();  // the q tile of a task without kv rows
    block_sync();           // K/V tiles become the merge buffer

#pragma unroll
    for (int n = 0; n < kColTiles; ++n) {
#pragma unroll
      for (int e = 0; e < kAccElems; ++e) {
        smem.u.o[wave][acc_row(lane, e) * D + 16 * n + acc_col(lane, e)] = o_acc[n].v[e];
      }
    }
    if (lane % kRowLanes == 0) {
#pragma unroll
      for (int r = 0; r < kAccRowsPerLane; ++r) {
        smem.m[wave][acc_slot_row(lane, r)] = m_run.v[r];
        smem.l[wave][acc_slot_row(lane, r)] = l_run.v[r];
      }
    }
    block_sync();
    for (int idx = tid; idx < t.num_heads * D; idx += kThreads) {
      const int row = idx / D, d = idx % D;
      float m_all = kNegInf;
#pragma unroll
      for (int w = 0; w < kWaves; ++w) m_all = max_f32(m_all, smem.m[w][row]);
      float l_all = 0.f, o_all = 0.f;
      if (m_all != kNegInf) {
#pragma unroll
        for (int w = 0; w < kWaves; ++w) {
          const float wgt = fast_exp2(smem.m[w][row] - m_all);
          l_all += wgt * smem.l[w][row];
          o_all += wgt * smem.u.o[w][row * D + d];
        }
      }
      const float inv_l = l_all > 0.f ? p.v_scale / l_all : 0.f;
      store_output<T>(p, t.item, t.first_head + row, d, o_all * inv_l, D);
      if (d == 0) store_lse(p, t.item, t.first_head + row, l_all > 0.f ? m_all + log2_f32(l_all) : kNegInf);
    }
  }
}

// The instantiations: q/o type x KV storage x head dim.
#define TFO_DECODE_MMA_KV(T, D)                                                  \
  template TFO_GLOBAL void decode_mma_kernel<T, T, D>(const DecodeParams);       \
  template TFO_GLOBAL void decode_mma_kernel<T, Fp8E4M3, D>(const DecodeParams); \
  template TFO_GLOBAL void decode_mma_kernel<T, Fp8E5M2, D>(const DecodeParams);

#if defined(TFO_DTYPE_F16)
#if defined(TFO_HEAD_DIM_64)
TFO_DECODE_MMA_KV(half_t, 64)
#endif
#if defined(TFO_HEAD_DIM_128)
TFO_DECODE_MMA_KV(half_t, 128)
#endif
#if defined(TFO_HEAD_DIM_256)
TFO_DECODE_MMA_KV(half_t, 256)
#endif
#endif
#if defined(TFO_DTYPE_BF16)
#if defined(TFO_HEAD_DIM_64)
TFO_DECODE_MMA_KV(bf16_t, 64)
#endif
#if defined(TFO_HEAD_DIM_128)
TFO_DECODE_MMA_KV(bf16_t, 128)
#endif
#if defined(TFO_HEAD_DIM_256)
TFO_DECODE_MMA_KV(bf16_t, 256)
#endif
#endif

#undef TFO_DECODE_MMA_KV

}  // namespace tfo::kernels
