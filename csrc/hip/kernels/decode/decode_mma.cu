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
// (m, l, O) over the tokens it owns; the waves merge through shared memory at the end. Where
// copies are asynchronous (NVIDIA) the K/V tiles are double-buffered: tile j + 1 streams in while
// tile j is used, FP8 tiles as raw bytes that go to the mma as 8-bit fragments, widened in
// registers (mma.h's load_b_*_8bit; q's columns take the order those fragments give k). With
// synchronous copies (AMD) FP8 is widened on its way in. The widening is exact (fp8.h's scaled
// binary16, or the hardware's exact values with the scale folded into the softmax).
#include <type_traits>

#include "decode_common.h"
#include "split_merge.h"
#include "../online_softmax.h"
#include "gpu_iface/memory.h"
#include "gpu_iface/mma.h"

namespace tfo::kernels {

// kWide: twice the waves, so a K/V tile of twice the tokens, for launches of at most one block
// per multiprocessor (batch 1's splits): each block then keeps twice the bytes in flight and
// runs half the tiles, with (head_dim <= 128) two waves per scheduler to hide each other's
// latencies. Only where copies are asynchronous (kMmaDecodeHasWide): AMD's one synchronous stage
// has no bytes in flight to add, and a wide d128 tile would not fit gfx942's 64 KiB of LDS.
inline constexpr bool kMmaDecodeHasWide = kAsyncCopies;

template <int D, bool kWide = false>
struct MmaDecodeShape {
  static constexpr int kWaves = (D >= 256 ? 2 : 4) * (kWide ? 2 : 1);
  static constexpr int kThreads = kWaves * kWaveSize;
  static constexpr int kTokens = 16 * kWaves;
  static constexpr int kRows = 16;
};

template <int D, bool kWide = false>
inline constexpr int kMmaDecodeThreads = MmaDecodeShape<D, kWide>::kThreads;

// Whether an instance merges its split tasks by words where its launch gives it them
// (split_merge.h; the bindings give them to the wide shape's cooperative launch alone): the wide
// shape above head_dim 64. The other instances keep the words' registers out of their
// allocation (at head_dim 64 the wide kernels went from 116 to 128 registers and spilled, sm_80
// and sm_90a; the narrow ones from 158-162 to 204).
template <int D, bool kWide>
inline constexpr bool kMmaDecodeMergesByWords = kMergeSplitsInLaunch && kWide && D > 64;

// kHeadColumns: the products transposed, with the query heads as the columns of 16 x 8 products,
//
//   Sᵀ (the wave's 16 tokens x 8 heads) = K_w . Qᵀ        Oᵀ_w (D x 8 heads) += V_wᵀ . Pᵀ
//
// for FP8 caches read as 8-bit fragments (their B loaders read transposed are the A operands),
// GQA groups of at most 8 heads and the 4-warp shape. A GQA group of 4 fills 4 of the 16 rows of
// the row form's tiles; here a wave's O holds D / 16 accumulators of 4 floats instead of 8, and
// the products halve: fewer registers, so four blocks share a multiprocessor (the bindings'
// launch of more blocks than the default grid holds: plan()'s deal of one to three rounds of
// equal unsplit tasks, decode_order.cpp).
template <typename KV, int D, bool kWide>
inline constexpr bool kMmaDecodeHasHeadColumns = kHasHeadColumns && kIsFp8<KV> && !kWide && kAsyncCopies;
inline constexpr int kHeadColumnsMaxGroup = 8;

// AccRows: the tensor-core waves' accumulators (store_acc_f32 / store_acc_f32_8bit_b) without
// bank conflicts. In rows of D floats (D a multiple of 32: every row starts a 128-byte line) the
// lanes of one store that differ only in their row would hit the same banks (8-way on NVIDIA).
// NVIDIA: a row's 32-byte blocks are XOR-swizzled by s(r) = 2 (r % 2) + (r / 2) % 2, which is
// distinct over any 4 rows from a multiple of 4 (a half warp's 8-byte pair stores: 4 rows at one
// block fill the line's 4 slots) and differs in bit 1 between rows 2k and 2k + 1 (a quarter
// warp's 16-byte stores: 2 rows at blocks 2j, 2j + 1 take the line's opposite halves). AMD (a
// store covers rows e, e + 4, e + 8, e + 12 at 16 columns): rows padded by 4 floats put rows 4
// apart 16 banks apart, as the prefill kernel's float32 stage does.
template <int D>
struct AccRows {
  static_assert(D % 32 == 0, "rows start 128-byte lines");
  static constexpr bool kSwizzled = kAccColRun == 2;
  static constexpr int kRowFloats = kSwizzled ? D : D + 4;
  static TFO_INLINE int at(int row, int col) {
    if constexpr (kSwizzled) {
      const int s = 2 * (row & 1) + ((row >> 1) & 1);
      return row * D + ((((col >> 3) ^ s)) << 3) + (col & 7);
    } else {
      return row * kRowFloats + col;
    }
  }
};

// Byte offsets into the kernel's dynamic shared memory.
//
//   q | P tiles (AMD) | m, l | row addresses | K/V region
//
// Row addresses: two buffers of the cache addresses of a tile's K rows then V rows (RowAddresses).
//
// The K/V region holds kStages (K, V) tile pairs as stored in the cache. A 16-bit cache's pairs
// are the swizzled T tiles the mma reads. An FP8 cache with asynchronous copies stages its raw
// bytes (swizzled rows of bytes, RawTile) that the 8-bit fragments read; with synchronous copies
// the bytes are widened on their way in, straight into T tiles. After the last tile, the region
// is the buffer in which the waves merge their outputs.
template <typename T, typename KV, int D, bool kWide = false>
struct MmaDecodeSmem {
  using Shape = MmaDecodeShape<D, kWide>;
  // NVIDIA's copies are asynchronous: the next K/V tile streams in while this one is used.
  // AMD's copies are synchronous loads, so a second buffer would only cost LDS.
  static constexpr int kStages = kAsyncCopies ? 2 : 1;
  // FP8 with asynchronous copies: the raw bytes are staged and go straight into 8-bit fragments
  // (the platforms with asynchronous copies have them); otherwise widened on their way in.
  static constexpr bool kFragments8Bit = kIsFp8<KV> && kStages > 1;
  static constexpr bool kWidenOnLoad = kIsFp8<KV> && !kFragments8Bit;
  static_assert(!kFragments8Bit || kHas8BitB, "staged FP8 tiles are read as 8-bit fragments");
  static constexpr int kTTileBytes = Shape::kTokens * D * static_cast<int>(sizeof(T));
  static constexpr int kRawTileBytes = Shape::kTokens * D * static_cast<int>(sizeof(KV));
  static constexpr int kRawRowChunks = D * static_cast<int>(sizeof(KV)) / 16;
  static constexpr int kQ = 0;
  static constexpr int kP = kQ + Shape::kRows * D * static_cast<int>(sizeof(T));
  // P tiles: where an accumulator is no A operand (AMD), each wave's P passes through one.
  static constexpr int kPBytes = kAccIsOperandA ? 0 : Shape::kWaves * 16 * 16 * static_cast<int>(sizeof(T));
  static constexpr int kM = kP + kPBytes;
  static constexpr int kL = kM + Shape::kWaves * Shape::kRows * 4;
  static constexpr int kAddr = kL + Shape::kWaves * Shape::kRows * 4;
  static constexpr int kAddrBytes = 2 * Shape::kTokens * 8;  // one buffer
  static constexpr int kKv = kAddr + 2 * kAddrBytes;
  static constexpr int kStageBytes = 2 * (kWidenOnLoad ? kTTileBytes : kRawTileBytes);
  // Tiles the fragment loaders read start on 128-byte boundaries (check_tile_alignment).
  static_assert(kQ % 128 == 0 && kKv % 128 == 0 && kStageBytes % 128 == 0 &&
                    kTTileBytes % 128 == 0,
                "decode tiles must be 128-byte aligned");
  static constexpr int kKvBytes = kStages * kStageBytes;
  // The waves' outputs, rows in AccRows' layout (without bank conflicts for their stores).
  static constexpr int kMergeBytes = Shape::kWaves * Shape::kRows * AccRows<D>::kRowFloats * 4;
  static constexpr int kBytes = kKv + (kKvBytes > kMergeBytes ? kKvBytes : kMergeBytes);
  static_assert(kBytes <= kMaxBlockSharedBytes, "decode tiles exceed a block's shared memory");
  static_assert(kAddr % 8 == 0 && kKv % 16 == 0 && kStageBytes % 16 == 0, "aligned regions");
  // A staged FP8 tile: rows of D bytes, read as 16-bit pairs (swizzled like the T tiles).
  using RawTile = SmemTile<half_t, Shape::kTokens, D * static_cast<int>(sizeof(KV)) / 2>;
  static_assert(2 * Shape::kTokens <= Shape::kThreads, "one row address per thread");
};

template <typename T, typename KV, int D, bool kWide = false>
inline constexpr int kMmaDecodeSmemBytes = MmaDecodeSmem<T, KV, D, kWide>::kBytes;

// The cache address of every K and V row of a tile, computed once per row by one thread and
// handed to the copies through shared memory, one iteration ahead: otherwise every thread that
// copies a chunk of a row repeats the row's page lookup and address arithmetic (sm_90a: 343 of
// the loop's ~750 instructions per tile went to issuing its copies, 150 now). begin() reads
// the row's page id; finish(), after the tile's math has given that load time to land, stores
// the address.
template <typename KV, int kTokens>
struct RowAddresses {
  const KV* row = nullptr;  // the row's address without its page's offset
  int64_t page = 0;         // the page id, loaded
  int64_t page_stride = 0;
  bool active = false;

  TFO_INLINE void begin(const DecodeParams& p, const int32_t* pages, int32_t tile0, int32_t kv_hi,
                        int32_t kv_head, int tid) {
    active = tid < 2 * kTokens;
    if (!active) return;
    const bool is_v = tid >= kTokens;
    const int32_t pos = tile0 + (is_v ? tid - kTokens : tid);
    const PageSlot at = page_slot(pos < kv_hi ? pos : kv_hi - 1, p.page_div);
    page = pages[at.page];
    page_stride = is_v ? p.v_stride_page : p.k_stride_page;
    row = static_cast<const KV*>(is_v ? p.v : p.k) +
          (static_cast<int64_t>(at.slot) * (is_v ? p.v_stride_token : p.k_stride_token) +
           kv_head * (is_v ? p.v_stride_head : p.k_stride_head));
  }

  TFO_INLINE void finish(const KV** buffer, int tid) const {
    if (active) buffer[tid] = row + page * page_stride;
  }
};

// Issues the copies of one K/V tile (rows tile0 .. tile0 + kTokens of the task's kv head, whose
// addresses RowAddresses left in `rows`: K rows, then V rows) into a stage; rows at or past
// kv_hi are zero-filled. Commit and wait are the caller's.
template <typename T, typename KV, int D, bool kWide>
TFO_INLINE void issue_kv_tile(const KV* const* rows, int32_t tile0, int32_t kv_hi, uint8_t* stage,
                              int tid) {
  using Shape = MmaDecodeShape<D, kWide>;
  using Smem = MmaDecodeSmem<T, KV, D, kWide>;
  using KvTile = SmemTile<T, Shape::kTokens, D>;
  // Chunks per row: 16 bytes of the cache, or (widening on load) 8 FP8 bytes in, 16 bytes of T out.
  constexpr int kChunks = Smem::kWidenOnLoad ? D / 8 : Smem::kRawRowChunks;
  const KvTile k_tile{reinterpret_cast<T*>(stage)};
  const KvTile v_tile{reinterpret_cast<T*>(stage + Smem::kTTileBytes)};
  // A thread keeps its chunk and its row within each pass of the block over kRowsPerPass rows;
  // where a pass spans whole blocks of 8 rows, the swizzle term is the same in every pass.
  static_assert(Shape::kThreads % kChunks == 0, "a pass covers whole rows");
  constexpr int kRowsPerPass = Shape::kThreads / kChunks;
  constexpr bool kPassInBlocks = kRowsPerPass % 8 == 0;
  const int pass_row = tid / kChunks, chunk = tid % kChunks;
  const auto dst = [&](const auto& tile, int row) {
    if constexpr (kPassInBlocks) {
      return tile.chunk_ptr_in_block(row - pass_row, pass_row, chunk);
    } else {
      return tile.chunk_ptr(row, chunk);
    }
  };
#pragma unroll
  for (int i = 0; i < Shape::kTokens * kChunks / Shape::kThreads; ++i) {
    const int row = i * kRowsPerPass + pass_row;
    const bool in = tile0 + row < kv_hi;
    const KV* k_row = rows[row];
    const KV* v_row = rows[Shape::kTokens + row];
    if constexpr (Smem::kWidenOnLoad) {
      auto widen = [&](const KV* src, const KvTile& tile) {
        float f[8];
        KvVec8<T> packed;
        kv8_to_float<KV>(in ? load_kv8<KV>(src, chunk * 8) : zero_kv8<KV>(), f);
#pragma unroll
        for (int e = 0; e < 4; ++e) packed.w[e] = pack2<T>(f[2 * e], f[2 * e + 1]);
        *reinterpret_cast<KvVec8<T>*>(dst(tile, row)) = packed;
      };
      widen(k_row, k_tile);
      widen(v_row, v_tile);
    } else {
      const KV* k_src = k_row + chunk * (16 / sizeof(KV));
      const KV* v_src = v_row + chunk * (16 / sizeof(KV));
      if constexpr (Smem::kFragments8Bit) {  // rows of bytes, swizzled for the fragment loads
        using RawTile = typename Smem::RawTile;
        copy_global_to_shared_16b(dst(RawTile{reinterpret_cast<half_t*>(stage)}, row), k_src, in);
        copy_global_to_shared_16b(dst(RawTile{reinterpret_cast<half_t*>(stage + Smem::kRawTileBytes)}, row), v_src,
                                  in);
      } else {  // the T tiles themselves
        copy_global_to_shared_16b(dst(k_tile, row), k_src, in);
        copy_global_to_shared_16b(dst(v_tile, row), v_src, in);
      }
    }
  }
}

// The widenings the 8-bit fragments take (mma.h's load_b_*_8bit), into pairs of T: fp8.h's
// scaled binary16 (bf16: through float, exactly), or (OCP e4m3fn) the hardware's exact values,
// 2^8 times those, which the kernel folds into its score and output scales instead of scaling
// every element.
template <typename T>
TFO_INLINE uint32_t half_pair_as(uint32_t h2) {
  if constexpr (std::is_same_v<T, half_t>) {
    return h2;
  } else {
    return pack2<T>(to_float(bits_to<half_t>(static_cast<uint16_t>(h2 & 0xffffu))),
                    to_float(bits_to<half_t>(static_cast<uint16_t>(h2 >> 16))));
  }
}
// A widening into pairs of T from a conversion to binary16 pairs (ToHalf: pairs and strided, as
// mma.h's load_b_*_8bit take them).
template <typename T, typename ToHalf>
struct WidenTo {
  TFO_INLINE void pairs(uint32_t w, uint32_t& lo, uint32_t& hi) const {
    ToHalf::pairs(w, lo, hi);
    lo = half_pair_as<T>(lo);
    hi = half_pair_as<T>(hi);
  }
  TFO_INLINE void strided(uint32_t w, uint32_t& lo, uint32_t& hi) const {
    ToHalf::strided(w, lo, hi);
    lo = half_pair_as<T>(lo);
    hi = half_pair_as<T>(hi);
  }
};
template <typename KV>
struct BitsToHalf {
  static TFO_INLINE void pairs(uint32_t w, uint32_t& lo, uint32_t& hi) { fp8x4_to_half_pairs<KV>(w, lo, hi); }
  static TFO_INLINE void strided(uint32_t w, uint32_t& lo, uint32_t& hi) { fp8x4_to_half_bits<KV>(w, lo, hi); }
};
struct HardwareToHalf {
  static TFO_INLINE void pairs(uint32_t w, uint32_t& lo, uint32_t& hi) { e4m3fn_x4_to_half_pairs(w, lo, hi); }
  static TFO_INLINE void strided(uint32_t w, uint32_t& lo, uint32_t& hi) { e4m3fn_x4_to_half_strided(w, lo, hi); }
};
template <typename T, typename KV>
using BitWiden = WidenTo<T, BitsToHalf<KV>>;
template <typename T>
using HardwareWiden = WidenTo<T, HardwareToHalf>;
inline constexpr float kHardwareE4M3Unit = 1.0f / 256.0f;  // fp8.h's e4m3 binary16 over the exact value

// A wave's running maximum after a tile (online_softmax.h's next_running_max), which it updates:
// the maximum the tile's exponentials are taken against (floored at kMaxFloor, so that a row
// with no finite score yet gives zeros), the factor on what was accumulated (exactly 1 where the
// maximum stays), and whether it stayed.
struct RunningMaxStep {
  float use, rescale;
  bool same;
};
TFO_INLINE RunningMaxStep step_running_max(float& m_run, float tile_max) {
  const float m_new = next_running_max(m_run, tile_max);
  RunningMaxStep step;
  step.use = max_f32(m_new, kMaxFloor);
  step.same = m_new == m_run;
  step.rescale = step.same ? 1.0f : fast_exp2(m_run - step.use);
  m_run = m_new;
  return step;
}

// The kernels' body: a persistent block's tasks (decode_mma_kernel, decode_mma_head_columns_kernel).
template <typename T, typename KV, int D, bool kWide, bool kHeadColumns>
TFO_INLINE void decode_mma_tasks(const DecodeParams& p) {
  static_assert(!kWide || kMmaDecodeHasWide, "the wide shape needs asynchronous copies");
  static_assert(!kHeadColumns || kMmaDecodeHasHeadColumns<KV, D, kWide>, "head columns: FP8 8-bit fragments");
  using Shape = MmaDecodeShape<D, kWide>;
  using Smem = MmaDecodeSmem<T, KV, D, kWide>;
  constexpr int kWaves = Shape::kWaves;
  constexpr int kThreads = Shape::kThreads;
  constexpr int kTokens = Shape::kTokens;
  constexpr int kRows = Shape::kRows;
  constexpr int kStages = Smem::kStages;
  constexpr int kChunks = D / 8;
  constexpr int kColTiles = D / 16;
  using QTile = SmemTile<T, kRows, D>;
  using KvTile = SmemTile<T, kTokens, D>;
  using PTile = SmemTile<T, 16, 16>;
  using RawTile = typename Smem::RawTile;
  // The 8-bit fragments of an OCP e4m3fn cache widen in hardware (exact values: the scales
  // shrink). fnuz caches keep fp8.h's bit path: their 0x7f is finite where the hardware's is NaN.
  constexpr bool kMayUseHardware = kHardwareE4M3Fn && std::is_same_v<KV, Fp8E4M3> && Smem::kFragments8Bit;
  const bool hardware = kMayUseHardware && p.kv_ocp_e4m3;
  const float kv_unit = hardware ? kHardwareE4M3Unit : 1.0f;
  const float q_scale = p.q_scale * kv_unit;
  auto with_widen = [&](auto&& f) {
    if constexpr (kMayUseHardware) {
      if (hardware) return f(HardwareWiden<T>{});
    }
    return f(BitWiden<T, KV>{});
  };

  TFO_DYNAMIC_SHARED_BYTES(decode_smem);
  check_tile_alignment(decode_smem);  // the layout's offsets are multiples of 128 bytes
  const QTile q_tile{reinterpret_cast<T*>(decode_smem + Smem::kQ)};
  float* const smem_m = reinterpret_cast<float*>(decode_smem + Smem::kM);
  float* const smem_l = reinterpret_cast<float*>(decode_smem + Smem::kL);
  float* const smem_o = reinterpret_cast<float*>(decode_smem + Smem::kKv);
  const int tid = thread_index_x();
  const int wave = wave_index();
  const int lane = lane_id();
  const PTile p_tile{reinterpret_cast<T*>(decode_smem + Smem::kP) + wave * 16 * 16};  // !kAccIsOperandA
  auto stage_ptr = [&](int s) { return decode_smem + Smem::kKv + s * Smem::kStageBytes; };
  auto row_buffer = [&](int32_t tile) {
    return reinterpret_cast<const KV**>(decode_smem + Smem::kAddr + (tile % 2) * Smem::kAddrBytes);
  };

  // The header and the block's first item, read together before the wait (the schedule is
  // plan()'s copy, never the launch before's output): the item's place needs nothing of the
  // header (plan_info.h), and it carries the request's kv length and first page.
  const ScheduleHeader schedule = schedule_header(p);
  WorkItem item = schedule_item_ahead(p, task_item(p, block_index_x()));
  const int32_t num_tasks = schedule.num_items * p.num_kv_heads * p.head_slices;
  // Split tasks merge by words (split_merge.h) in the wide shape's launches alone (the bindings'
  // cooperative launch; kMmaDecodeMergesByWords).
  const bool by_words = kMmaDecodeMergesByWords<D, kWide> && merges_by_words(p, num_tasks);
  for (int32_t task = block_index_x(); task < num_tasks; task += p.num_blocks) {
    namespace tl = flashinfer_ops::timeline;
    const TaskTimeline timeline = task_timeline(p, task);  // a profiling build's (task_timeline.h)
    const TaskHeads t = decode_task(p, item, task, kRows);
    grid_dependency_wait();  // q, the cache and the page ids may come from the launch before
    timeline.stamp(tl::kWaitDone);
    const int32_t req = t.item.request;
    const int32_t kv_len = t.item.kv_len;
    int32_t kv_lo = t.item.kv_begin;
    const int32_t kv_hi = t.item.kv_end < kv_len ? t.item.kv_end : kv_len;
    if (p.window_left >= 0 && kv_len - 1 - p.window_left > kv_lo) kv_lo = kv_len - 1 - p.window_left;
    const int32_t num_tiles = kv_hi > kv_lo ? (kv_hi - kv_lo + kTokens - 1) / kTokens : 0;

    block_sync();  // the previous task is done with shared memory
    const T* q_req = static_cast<const T*>(p.q) + static_cast<int64_t>(req) * p.q_stride_batch;
    // With 8-bit fragments a thread copies whole 16-element blocks (two chunks), which it
    // permutes once they land.
    constexpr int kQRun = Smem::kFragments8Bit ? 2 : 1;
    for (int idx = tid; idx < kRows * kChunks / kQRun; idx += kThreads) {
#pragma unroll
      for (int u = 0; u < kQRun; ++u) {
        const int row = (idx * kQRun + u) / kChunks, chunk = (idx * kQRun + u) % kChunks;
        const bool in = row < t.num_heads;
        const int head = in ? t.first_head + row : t.first_head;
        copy_global_to_shared_16b(q_tile.chunk_ptr(row, chunk),
                                  q_req + head * p.q_stride_head + chunk * 8, in);
      }
    }
    copy_commit_group();

    const int32_t* pages = request_pages(p, req, t.item.page_base);
    // Row addresses run one tile ahead of the copies, which run kStages - 1 tiles ahead of the
    // math: tile s's addresses are stored before tile s - 1's copies are issued.
    RowAddresses<KV, kTokens> rows;
    auto next_rows = [&](int32_t tile) {  // begin() for a tile, when it exists
      rows.active = false;
      if (tile < num_tiles) rows.begin(p, pages, kv_lo + tile * kTokens, kv_hi, t.kv_head, tid);
    };
    next_rows(0);
    rows.finish(row_buffer(0), tid);
#pragma unroll
    for (int s = 0; s + 1 < kStages; ++s) {
      // Tile s's addresses are stored, and tile s - 1's copies have read the buffer that tile
      // s + 1's addresses go to (two buffers serve any number of stages).
      block_sync();
      if (s < num_tiles) {
        issue_kv_tile<T, KV, D, kWide>(row_buffer(s), kv_lo + s * kTokens, kv_hi, stage_ptr(s), tid);
      }
      copy_commit_group();
      next_rows(s + 1);
      rows.finish(row_buffer(s + 1), tid);
    }
    next_rows(kStages);
    if constexpr (Smem::kFragments8Bit) {
      // q's columns in the order the 8-bit K fragments give k (per 16-column block). Each
      // thread permutes the blocks it copied, once its oldest group (q) has landed; the tile
      // loop's first barrier orders this before any fragment load of q.
      copy_wait_groups<kStages - 1>();
      for (int idx = tid; idx < kRows * kChunks / 2; idx += kThreads) {
        const int row = 2 * idx / kChunks, chunk = 2 * idx % kChunks;
        uint32_t* lo = reinterpret_cast<uint32_t*>(q_tile.chunk_ptr(row, chunk));
        uint32_t* hi = reinterpret_cast<uint32_t*>(q_tile.chunk_ptr(row, chunk + 1));
        uint32_t w[8] = {lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]};
        permute_pairs_8bit_b(w);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          lo[i] = w[i];
          hi[i] = w[4 + i];
        }
      }
    }

    // O, or with head columns Oᵀ: D / 16 tiles either way (16 x 16 of 16 rows, 16 x 8 of 8 heads).
    using OAcc = std::conditional_t<kHeadColumns, FragC8, FragC>;
    constexpr int kOElems = sizeof(OAcc) / sizeof(float);
    OAcc o_acc[kColTiles];
#pragma unroll
    for (int n = 0; n < kColTiles; ++n) {
#pragma unroll
      for (int e = 0; e < kOElems; ++e) o_acc[n].v[e] = 0.f;
    }
    // The softmax state a lane keeps: per row slot, or with head columns per column slot
    // (kAcc8ColsPerLane of them, in the first slots; l then holds this lane's share of the column
    // until the loop ends).
    using SlotVals = RowVals;
    static_assert(!kHeadColumns || kAcc8ColsPerLane <= kAccRowsPerLane, "column slots in SlotVals");
    SlotVals m_run = row_vals_filled(kNegInf);
    SlotVals l_run = row_vals_filled(0.f);

    // Tile j's turn in the pipeline (both forms' loops): once every wave is done with tile j - 1,
    // its stage takes tile j + kStages - 1's copies; returns tile j's stage once it (and q) landed.
    const auto await_tile = [&](int32_t j, int32_t tile0) {
      block_sync();  // every wave is done with tile j - 1: its stage (and the widened tiles) are free
      if (j + kStages - 1 < num_tiles) {
        issue_kv_tile<T, KV, D, kWide>(row_buffer(j + kStages - 1), tile0 + (kStages - 1) * kTokens, kv_hi,
                                       stage_ptr((j + kStages - 1) % kStages), tid);
      }
      copy_commit_group();
      copy_wait_groups<kStages - 1>();  // tile j (and q) have landed
      block_sync();
      if (j == 0) timeline.stamp(tl::kFirstTile);
      return stage_ptr(j % kStages);
    };
    // After tile j's math: the row addresses run on, a tile ahead of the copies.
    const auto rows_ahead = [&](int32_t j) {
      rows.finish(row_buffer(j + kStages), tid);  // read after the next iteration's barrier
      next_rows(j + kStages + 1);
    };
    // The tile loop, for the rows the task's heads fill (kLive): where every lane holds only
    // padding rows in some accumulator slots (NVIDIA: slot 1, rows 8-15, for a task of at most 8
    // heads), their softmax is skipped and their P is zero.
    const auto tile_loop = [&](auto live_rows) {
      if constexpr (!kHeadColumns) {  // (head columns: head_column_loop)
        constexpr int kLive = decltype(live_rows)::value;
        for (int32_t j = 0; j < num_tiles; ++j) {
          const int32_t tile0 = kv_lo + j * kTokens;
          uint8_t* kv_tiles = await_tile(j, tile0);
          const KvTile k_tile{reinterpret_cast<T*>(kv_tiles)};
          const KvTile v_tile{reinterpret_cast<T*>(kv_tiles + Smem::kTTileBytes)};

          FragC s[1];
#pragma unroll
          for (int e = 0; e < kAccElems; ++e) s[0].v[e] = 0.f;
          if constexpr (Smem::kFragments8Bit) {
            const RawTile k_raw{reinterpret_cast<half_t*>(kv_tiles)};
            with_widen([&](const auto& widen) {
#pragma unroll
              for (int k0 = 0; k0 < D; k0 += 32) {
                FragA<T, 32> a;
                FragB<T, 32> b;
                load_a(a, q_tile, 0, k0);
                load_b_nk_8bit(b, k_raw, 16 * wave, k0, widen);
                mma(s[0], a, b);
              }
            });
          } else {
#pragma unroll
            for (int k0 = 0; k0 < D; k0 += 32) {
              FragA<T, 32> a;
              FragB<T, 32> b;
              load_a(a, q_tile, 0, k0);
              load_b_nk(b, k_tile, 16 * wave, k0);
              mma(s[0], a, b);
            }
          }
          float x[kAccElems];
#pragma unroll
          for (int e = 0; e < kAccElems; ++e) x[e] = s[0].v[e] * q_scale;
          soft_cap_scores<kAccElems>(x, p.cap_log2);
          // An element of a padding-only slot is zero from here on (its P, so P·V adds nothing).
          constexpr auto live = [](int e) { return acc_slot_first_row(acc_row_slot(e)) < kLive; };
          constexpr auto live_slot = [](int r) { return acc_slot_first_row(r) < kLive; };
#pragma unroll
          for (int e = 0; e < kAccElems; ++e) {
            const int32_t pos = tile0 + 16 * wave + acc_col(lane, e);
            s[0].v[e] = !live(e) ? 0.f : (pos < kv_hi ? x[e] : kNegInf);
          }
          constexpr bool kAllLive = live_slot(kAccRowsPerLane - 1);
          // The row reductions of the live slots (mma.h's row_max / row_sum where all are).
          const auto live_rows_reduce = [&](float init, auto op) {
            RowVals rows = row_vals_filled(init);
#pragma unroll
            for (int e = 0; e < kAccElems; ++e) {
              if (live(e)) rows.v[acc_row_slot(e)] = op(rows.v[acc_row_slot(e)], s[0].v[e]);
            }
#pragma unroll
            for (int r = 0; r < kAccRowsPerLane; ++r) {
              if (live_slot(r)) rows.v[r] = group_allreduce<kRowLanes>(rows.v[r], op);
            }
            return rows;
          };
          RowVals tile_max;
          if constexpr (kAllLive) {
            tile_max = row_max(s);
          } else {
            tile_max = live_rows_reduce(kNegInf, MaxOp{});
          }
          // The running maximum moves only past online_softmax.h's slack; a row whose maximum stays
          // keeps a factor of exactly 1, and O is rescaled only when some row of the wave moved.
          RowVals m_use, rescale;
          bool unchanged = true;
#pragma unroll
          for (int r = 0; r < kAccRowsPerLane; ++r) {
            if (!live_slot(r)) continue;
            const RunningMaxStep step = step_running_max(m_run.v[r], tile_max.v[r]);
            m_use.v[r] = step.use;
            rescale.v[r] = step.rescale;
            unchanged = unchanged && step.same;
          }
#pragma unroll
          for (int e = 0; e < kAccElems; ++e) {
            if (live(e)) s[0].v[e] = fast_exp2(s[0].v[e] - m_use.v[acc_row_slot(e)]);
          }
          RowVals tile_sum;
          if constexpr (kAllLive) {
            tile_sum = row_sum(s);
          } else {
            tile_sum = live_rows_reduce(0.f, SumOp{});
          }
#pragma unroll
          for (int r = 0; r < kAccRowsPerLane; ++r) {
            if (live_slot(r)) l_run.v[r] = l_run.v[r] * rescale.v[r] + tile_sum.v[r];
          }
          if (!wave_all(unchanged)) {
#pragma unroll
            for (int n = 0; n < kColTiles; ++n) {
#pragma unroll
              for (int e = 0; e < kAccElems; ++e) {
                if (live(e)) o_acc[n].v[e] *= rescale.v[acc_row_slot(e)];
              }
            }
          }

          // P as the A operand of P·V: in place where the accumulator has A's layout, else through
          // this wave's 16 x 16 tile.
          FragA<T, 16> pa;
          if constexpr (kAccIsOperandA) {
            acc_to_operand<T>(pa, s[0]);
          } else {
#pragma unroll
            for (int e = 0; e < kAccElems; ++e) {
              *p_tile.ptr(acc_row(lane, e), acc_col(lane, e)) = from_float<T>(s[0].v[e]);
            }
            wave_sync();
            load_a(pa, p_tile, 0, 0);
          }
          if constexpr (Smem::kFragments8Bit) {
            // Output tile n = 2c + h holds columns 32c + 16h + acc_col_8bit_b(lane, e).
            const RawTile v_raw{reinterpret_cast<half_t*>(kv_tiles + Smem::kRawTileBytes)};
            with_widen([&](const auto& widen) {
#pragma unroll
              for (int c = 0; c < D / 32; ++c) {
                FragB<T, 16> vb[2];
                load_b_kn_8bit(vb, v_raw, 16 * wave, 32 * c, widen);
                mma(o_acc[2 * c], pa, vb[0]);
                mma(o_acc[2 * c + 1], pa, vb[1]);
              }
            });
          } else {
#pragma unroll
            for (int n = 0; n < kColTiles; ++n) {
              FragB<T, 16> vb;
              load_b_kn(vb, v_tile, 16 * wave, 16 * n);
              mma(o_acc[n], pa, vb);
            }
          }
          if constexpr (!kAccIsOperandA) wave_sync();  // the wave's P tile is read before the next P lands
          rows_ahead(j);
        }
      }
    };
    // The tile loop with head columns: the same pipeline; per column (head) the online softmax
    // over the wave's tokens, Pᵀ handed to the next product in registers.
    const auto head_column_loop = [&] {
      if constexpr (kHeadColumns) {
        // One loop per widening (an OCP e4m3 cache's hardware one or the bit path), each allocated
        // on its own.
        with_widen([&](const auto& widen) {
          for (int32_t j = 0; j < num_tiles; ++j) {
            const int32_t tile0 = kv_lo + j * kTokens;
            uint8_t* kv_tiles = await_tile(j, tile0);
            const RawTile k_raw{reinterpret_cast<half_t*>(kv_tiles)};
            const RawTile v_raw{reinterpret_cast<half_t*>(kv_tiles + Smem::kRawTileBytes)};
            FragC8 s{};
#pragma unroll
            for (int k0 = 0; k0 < D; k0 += 32) {
              FragA<T, 16> ka[2];
              uint32_t qb[4];
              load_a_8bit(ka, k_raw, 16 * wave, k0, widen);
              load_b8_nk<T>(qb, q_tile, 0, k0);
              mma_16x8x16(s, ka[0], qb[0], qb[1]);
              mma_16x8x16(s, ka[1], qb[2], qb[3]);
            }
            float x[kAcc8Elems];
#pragma unroll
            for (int e = 0; e < kAcc8Elems; ++e) x[e] = s.v[e] * q_scale;
            soft_cap_scores<kAcc8Elems>(x, p.cap_log2);
#pragma unroll
            for (int e = 0; e < kAcc8Elems; ++e) {
              const int32_t pos = tile0 + 16 * wave + acc8_row(lane, e);
              s.v[e] = pos < kv_hi ? x[e] : kNegInf;
            }
            SlotVals m_use, rescale;
            bool unchanged = true;
#pragma unroll
            for (int c = 0; c < kAcc8ColsPerLane; ++c) {
              const float tile_max = acc8_col_allreduce(max_f32(s.v[c], s.v[c + kAcc8ColsPerLane]), MaxOp{});
              const RunningMaxStep step = step_running_max(m_run.v[c], tile_max);
              m_use.v[c] = step.use;
              rescale.v[c] = step.rescale;
              unchanged = unchanged && step.same;
            }
#pragma unroll
            for (int e = 0; e < kAcc8Elems; ++e) s.v[e] = fast_exp2(s.v[e] - m_use.v[acc8_col_slot(e)]);
#pragma unroll
            for (int c = 0; c < kAcc8ColsPerLane; ++c) {
              l_run.v[c] = l_run.v[c] * rescale.v[c] + (s.v[c] + s.v[c + kAcc8ColsPerLane]);
            }
            if (!wave_all(unchanged)) {
#pragma unroll
              for (int n = 0; n < kColTiles; ++n) {
#pragma unroll
                for (int e = 0; e < kAcc8Elems; ++e) o_acc[n].v[e] *= rescale.v[acc8_col_slot(e)];
              }
            }
            uint32_t pb[2];
            acc8_to_operand_b<T>(pb, s);
#pragma unroll
            for (int c = 0; c < D / 32; ++c) {
              FragA<T, 16> va[2];
              load_a_8bit_t(va, v_raw, 16 * wave, 32 * c, widen);
              mma_16x8x16(o_acc[2 * c], va[0], pb[0], pb[1]);
              mma_16x8x16(o_acc[2 * c + 1], va[1], pb[0], pb[1]);
            }
            rows_ahead(j);
          }
        });
#pragma unroll
        for (int c = 0; c < kAcc8ColsPerLane; ++c) l_run.v[c] = acc8_col_allreduce(l_run.v[c], SumOp{});
      }
    };
    if constexpr (kHeadColumns) {
      head_column_loop();
    } else if constexpr (acc_slot_first_row(kAccRowsPerLane - 1) >= kRows / 2) {
      if (t.num_heads <= kRows / 2) {
        tile_loop(std::integral_constant<int, kRows / 2>{});
      } else {
        tile_loop(std::integral_constant<int, kRows>{});
      }
    } else {
      tile_loop(std::integral_constant<int, kRows>{});
    }
    copy_wait_groups<0>();  // the q tile of a task without kv rows
    timeline.stamp(tl::kTilesDone);
    // The block's next task's item, where there is one: in flight while this task's waves merge
    // and store, unless the task ends in a split's release (finish_split_task), which a
    // load in flight holds up by its latency (at batch 1, one split task per block, 0.2-0.4 us
    // per call; FP8 plans at batch 16-64 deal several split tasks per block). A split task reads
    // it after its arrival instead.
    const bool has_next = task + p.num_blocks < num_tasks;
    const bool releases = split_task_releases(p, t);
    if (has_next && !releases) item = schedule_item(p, task_item(p, task + p.num_blocks));
    block_sync();  // K/V tiles become the merge buffer

    using Rows = AccRows<D>;
    const auto rows_at = [](int row, int col) { return Rows::at(row, col); };
    if constexpr (kHeadColumns) {
      // Oᵀ tile n holds byte columns 16 n .. 16 n + 15 (load_a_8bit_t's order), a head a column.
#pragma unroll
      for (int n = 0; n < kColTiles; ++n) store_acc8_f32_t_8bit(smem_o, o_acc[n], wave * kRows, 16 * n, rows_at);
      if (acc8_row0_lane(lane)) {  // one lane a column pair
#pragma unroll
        for (int c = 0; c < kAcc8ColsPerLane; ++c) {
          smem_m[wave * kRows + acc8_row0_col(lane, c)] = m_run.v[c];
          smem_l[wave * kRows + acc8_row0_col(lane, c)] = l_run.v[c];
        }
      }
    } else {
#pragma unroll
      for (int n = 0; n < kColTiles; ++n) {
        if constexpr (Smem::kFragments8Bit) {
          store_acc_f32_8bit_b(smem_o, o_acc[n], wave * kRows, 16 * n, rows_at);
        } else {
          store_acc_f32(smem_o, o_acc[n], wave * kRows, 16 * n, rows_at);
        }
      }
    }
    if (!kHeadColumns && lane % kRowLanes == 0) {
#pragma unroll
      for (int r = 0; r < kAccRowsPerLane; ++r) {
        smem_m[wave * kRows + acc_slot_row(lane, r)] = m_run.v[r];
        smem_l[wave * kRows + acc_slot_row(lane, r)] = l_run.v[r];
      }
    }
    block_sync();
    const bool split_words = by_words && t.item.partial_row >= 0;
    combine_slots8<T, D, kWaves, kThreads, Rows>(p, t, smem_m, smem_l, smem_o, kRows, p.v_scale * kv_unit, tid,
                                                 split_words);
    timeline.stamp(tl::kCombined);
    if (split_words) {
      merge_split_words<T, kThreads, D>(p, schedule, t);
    } else {
      finish_split_task<T, kWaves, D>(p, schedule, t);
    }
    if (has_next && releases) item = schedule_item(p, task_item(p, task + p.num_blocks));
    timeline.end(tl::kFinished);
  }
  grid_dependents_launch();  // this block's stores are issued
}

template <typename T, typename KV, int D, bool kWide>
TFO_GLOBAL void TFO_LAUNCH_BOUNDS((kMmaDecodeThreads<D, kWide>)) decode_mma_kernel(const DecodeParams p) {
  decode_mma_tasks<T, KV, D, kWide, false>(p);
}

// Head columns at four blocks a multiprocessor (registers capped at 128; sm_90a d128: e5m2 128
// without spills, e4m3 128 with 20 bytes of spill stores, 121 / 155 uncapped).
inline constexpr int kHeadColumnsBlocksPerSm = 4;
template <typename T, typename KV, int D>
TFO_GLOBAL void TFO_LAUNCH_BOUNDS_MIN_BLOCKS((kMmaDecodeThreads<D, false>), kHeadColumnsBlocksPerSm)
    decode_mma_head_columns_kernel(const DecodeParams p) {
  decode_mma_tasks<T, KV, D, false, true>(p);
}

// The instantiations: q/o type x KV storage x head dim, and the wide shape where it exists.
#define TFO_DECODE_MMA_SHAPE(T, D, W)                                                \
  template TFO_GLOBAL void decode_mma_kernel<T, T, D, W>(const DecodeParams);       \
  template TFO_GLOBAL void decode_mma_kernel<T, Fp8E4M3, D, W>(const DecodeParams); \
  template TFO_GLOBAL void decode_mma_kernel<T, Fp8E5M2, D, W>(const DecodeParams);
#define TFO_DECODE_MMA_HEAD_COLUMNS(T, D)                                                  \
  template TFO_GLOBAL void decode_mma_head_columns_kernel<T, Fp8E4M3, D>(const DecodeParams); \
  template TFO_GLOBAL void decode_mma_head_columns_kernel<T, Fp8E5M2, D>(const DecodeParams);
#define TFO_DECODE_MMA_KV(T, D)                                                           \
  TFO_DECODE_MMA_SHAPE(T, D, false) TFO_IF_ASYNC_COPIES(TFO_DECODE_MMA_SHAPE(T, D, true)) \
  TFO_IF_ASYNC_COPIES(TFO_DECODE_MMA_HEAD_COLUMNS(T, D))

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
#undef TFO_DECODE_MMA_HEAD_COLUMNS
#undef TFO_DECODE_MMA_SHAPE

}  // namespace tfo::kernels
