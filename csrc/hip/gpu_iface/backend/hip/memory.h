// AMD: global -> LDS through VGPRs, and the LDS swizzle.
#pragma once

#include <cstdint>

namespace tfo::gpu {

// The MFMA fragment loads take any 16-byte aligned tile.
TFO_INLINE void check_tile_alignment(const void*) {}

// global_load_dwordx4 then ds_write_b128. The LDS store waits for the load, so the copy is
// synchronous and the group calls are no-ops; overlap comes from issuing the next tile's copies
// before the current tile's MFMAs. (gfx950's 16-byte global_load_lds could make it asynchronous.)
TFO_INLINE void copy_global_to_shared_16b(void* smem, const void* gmem, bool in_bounds = true) {
  using Chunk = vec_t<uint32_t, 4>;
  const Chunk v = in_bounds ? *static_cast<const Chunk*>(gmem) : Chunk{0u, 0u, 0u, 0u};
  *static_cast<Chunk*>(smem) = v;
}

struct alignas(16) Words16 {
  uint32_t w[4];
};

// A plain load followed by a compiler barrier (a signal fence: no instruction), so the accesses
// after it stay after it.
TFO_INLINE Words16 load_global_16b_first(const void* gmem) {
  const Words16 r = *static_cast<const Words16*>(gmem);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  return r;
}

inline constexpr bool kAsyncCopies = false;
#define TFO_IF_ASYNC_COPIES(...)

TFO_INLINE void copy_commit_group() {}

template <int kPending>
TFO_INLINE void copy_wait_groups() {}

// CDNA3 LDS: 32 banks x 4 bytes, so one 128-byte line holds 8 chunks, and a 16-byte LDS access
// (ds_read_b128, the K=32 fragment load) is served 8 lanes at a time. Those 8 lanes read 8
// consecutive rows at the same logical chunk; XOR-ing the chunk with the row's index modulo the
// 8 lines' worth of rows sends them to 8 different bank groups. Rows narrower than a line share
// one, so the row index is first divided by the rows per line.
// Rows are never negative: unsigned arithmetic keeps the index math to shifts and masks.
template <int kChunksPerRow>
TFO_HOST_DEVICE constexpr int swizzle_chunk(int row, int chunk) {
  constexpr int kChunksPerLine = 8;
  if constexpr (kChunksPerRow >= kChunksPerLine) {
    return chunk ^ static_cast<int>(static_cast<unsigned>(row) % kChunksPerLine);
  } else {
    constexpr int kRowsPerLine = kChunksPerLine / kChunksPerRow;
    return chunk ^ static_cast<int>(static_cast<unsigned>(row) / kRowsPerLine % kChunksPerRow);
  }
}

}  // namespace tfo::gpu
