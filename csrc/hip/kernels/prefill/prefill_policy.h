// The prefill kernels' tile shapes and per-instantiation choices (prefill_kernel.h runs them):
// one table, read by the kernels, their launches (csrc/hip/bindings/prefill.cu) and the AMD
// emulation alike.
#pragma once

#include <type_traits>

#include "gpu_iface/platform.h"
#include "gpu_iface/vec_types.h"

namespace tfo::kernels::prefill {

using namespace tfo::gpu;

// Tile shapes (the one dispatch table of shapes), by head dim and by launch kind: planned
// (batch, persistent) or single-request. Registers are the limit: O lives in registers.
//   NVIDIA, head_dim <= 128: 4 warps x 32 rows (two 16-row fragments per warp, so each K/V
//     fragment read from shared memory feeds two MMAs), K/V tiles of 64 rows (each warp runs 16
//     independent S products per k step; 32-row tiles left it waiting on its own dependency
//     chains), 32 in the soft-capped kernels at head_dim 128. It fits in 255 registers by
//     deriving the masks' row tokens, the Q copy's rows and the K/V copy's destination where
//     they are used instead of holding them, and by running head_dim 128's S k steps two at a
//     time (score.h).
//   Otherwise one 16-row fragment per wave: 4 waves (AMD: with 8 a wave gets at most 256
//     VGPRs), K/V tiles of 64 rows (AMD head_dim 256: 32, which also keeps shared memory within
//     gfx942's 64 KiB).
// Custom masks: served by every kernel but AMD's planned ones, whose scalar registers they would
// overflow; there a separate instantiation (kMasked) serves batches with masks.
template <int kHeadDim, bool kPlanned, bool kTransformScores = false, bool kMasked = false>
struct PrefillPolicy {
  static constexpr bool kTwoFrags = kWaveSize == 32 && kHeadDim <= 128;
  static constexpr int kWaves = 4;
  static constexpr int kRowFrags = kTwoFrags ? 2 : 1;
  static constexpr int kTileRows = kWaves * kRowFrags * 16;
  // NVIDIA's head_dim 256 kernels: 64-row K/V tiles with one buffer per matrix (the tile loop's
  // one-stage order: V's copy under S, the next K's under P.V), 96 KiB of shared memory and two
  // blocks per SM, single-request and planned alike. Two 64-row buffers would take 160 KiB (one
  // block per SM; sm_86/sm_89 have 99 KiB); 32-row tiles halve the work per barrier and per
  // row-maximum reduction.
  static constexpr bool kWideOneBufferKv = kWaveSize == 32 && kHeadDim == 256;
  // The soft-capped kernels (a tanh per score) keep 32-row K/V tiles at head_dim 128 on NVIDIA:
  // 64 rows would not fit in registers beside the transform.
  static constexpr int kKvTile =
      !kWideOneBufferKv && (kHeadDim == 256 || (kTwoFrags && kTransformScores && kHeadDim == 128)) ? 32 : 64;
  static constexpr int kThreads = kWaves * kWaveSize;
  static constexpr bool kCustomMask = kMasked || !(kWaveSize == 64 && kPlanned);
  // AMD's planned kernels without custom masks are the common ones; a batch with masks takes a
  // separate instantiation (kMasked), whose extra scalar state spills SGPRs into VGPR lanes.
  static constexpr bool kHasMaskedVariant = kWaveSize == 64 && kPlanned && !kMasked;
  // K/V buffers per matrix. NVIDIA: two (but kWideOneBufferKv), so tile j + 1 streams in
  // (cp.async) during all of tile j's math, with one barrier per tile. AMD: one (its copies are
  // synchronous, and two would not fit gfx942's 64 KiB of LDS at head_dim 256).
  static constexpr int kKvStages = kWaveSize == 32 && !kWideOneBufferKv ? 2 : 1;
  // AMD's planned kernels at head_dim 64 and 256 sit just under the vector registers of 4 and 2
  // waves per SIMD (128, 256); held there, so that small changes to the code around the tile
  // loop do not tip them into one wave fewer. At 128 they sit on both sides of 168 (3 waves),
  // and holding 3 spills to scratch.
  static constexpr int kMinWavesPerSimd =
      kWaveSize == 64 && kPlanned && !kMasked ? (kHeadDim == 64 ? 4 : kHeadDim == 256 ? 2 : 1) : 1;
  // Q + K + V tiles; planned launches also stage float32 partial rows there.
  static constexpr int kTileBytes = (kTileRows + 2 * kKvStages * kKvTile) * kHeadDim * 2;
  static constexpr int kStageBytes = kPlanned ? kTileRows * kHeadDim * 4 : 0;
  // Planned launches on NVIDIA: room for the cache offsets of two tiles' K/V rows, which the
  // paged ones use (one page lookup per row, shared by the threads that copy the row's chunks;
  // the policy does not know whether the cache is paged, so ragged launches reserve it too).
  static constexpr bool kSharedRowOffsets = kPlanned && kWaveSize == 32;
  static constexpr int kRowOffsetBase = kTileBytes > kStageBytes ? kTileBytes : kStageBytes;
  static constexpr int kRowOffsetBytes = kSharedRowOffsets ? 2 * kKvTile * 8 : 0;
  static constexpr int kSmemBytes = kRowOffsetBase + kRowOffsetBytes;
  static_assert(kSmemBytes <= kMaxBlockSharedBytes, "prefill tiles exceed a block's shared memory");
  // Q, then the K and V buffers, each on a 128-byte boundary (check_tile_alignment).
  static_assert(kTileRows * kHeadDim * 2 % 128 == 0 && kKvTile * kHeadDim * 2 % 128 == 0,
                "prefill tiles must be 128-byte aligned");
};

// The single-request kernels stage O through one fragment store per 16x16 accumulator
// (store_c): that code runs once per block, fetched cold, so its length is what it costs.
// NVIDIA's fp16 head_dim 128 kernels without a score transform sit at the edge of 255 registers,
// where the store moves the tile loop's allocation and spills (16k-token launches ran 1-2%
// slower while 1k ran 3-4% faster): they come in two instantiations, the fragment store for
// launches whose blocks run few K/V tiles (kFewTiles) and a store per element for the rest.
// (bf16's, with float row sums, keep one: with the fragment store their loop does not spill on
// sm_90a, and ran level or faster at 8k-16k.)
template <typename T, int kHeadDim, bool kPlanned, bool kTransformScores>
inline constexpr bool kEpilogueByLength =
    kWaveSize == 32 && kHeadDim == 128 && !kPlanned && !kTransformScores && std::is_same_v<T, half_t>;

// The most K/V tiles of any block for which a launch takes the kFewTiles instantiation
// (kEpilogueByLength): measured on an H200 (d128), the fragment store gained at
// kv 1k-2k and causal 4k, was level non-causal at 4k and lost 1-2% (fp16) at 8k-16k.
inline constexpr int kFewTilesMax = 64;

}  // namespace tfo::kernels::prefill
