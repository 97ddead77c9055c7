// Global -> shared copies in 16-byte chunks, and the swizzled shared-memory tile they fill.
//
// Contract (namespace tfo::gpu), implemented by backend/<vendor>/memory.h:
//   copy_global_to_shared_16b(smem, gmem, in_bounds = true)
//       copy one 16-byte chunk; writes zeros instead when !in_bounds (gmem is then not read).
//       NVIDIA: cp.async, asynchronous until copy_wait_groups. AMD: a synchronous vector load and
//       LDS store. Either way, other threads see the data only after block_sync().
//   copy_commit_group(), copy_wait_groups<kPending>()
//       close the current group of copies; wait until at most kPending groups are in flight.
//   check_tile_alignment(smem)
//       traps unless smem is 128-byte aligned where the fragment loaders need it (NVIDIA).
//   swizzle_chunk<kChunksPerRow>(row, chunk)
//       physical 16-byte chunk within a row for a logical one, chosen for the platform's banks.
//   load_global_16b_first(gmem) -> Words16
//       a 16-byte global load that the compiler keeps ahead of the memory accesses after it
//       (issued there; the thread waits only where the words are used).
//   kAsyncCopies, TFO_IF_ASYNC_COPIES(...)
//       whether the copies above are asynchronous; the macro expands to its arguments where they
//       are and to nothing elsewhere (instantiations of kernel shapes that only pay off with them).
#pragma once

#include "gpu_iface/platform.h"
#include "gpu_iface/vec_types.h"

#if defined(TFO_GPU_BACKEND_HIP)
#include "gpu_iface/backend/hip/memory.h"
#else
#include "gpu_iface/backend/cuda/memory.h"
#endif

namespace tfo::gpu {

// A row-major kRows x kCols tile in shared memory whose 16-byte chunks are permuted within each
// row by swizzle_chunk. Elements inside a chunk stay contiguous, so any access of up to 16 bytes
// that does not cross a chunk boundary (all fragment loads do not) can use ptr().
template <typename T, int kRows, int kCols>
struct SmemTile {
  static constexpr int kChunkElems = 16 / static_cast<int>(sizeof(T));
  static constexpr int kChunksPerRow = kCols / kChunkElems;
  static constexpr int kBytes = kRows * kCols * static_cast<int>(sizeof(T));
  static_assert(kCols % kChunkElems == 0, "rows must be whole 16-byte chunks");
  static_assert((kChunksPerRow & (kChunksPerRow - 1)) == 0, "chunks per row: a power of two");

  T* data;  // 16-byte aligned

  TFO_INLINE T* chunk_ptr(int row, int chunk) const {
    return data + row * kCols + swizzle_chunk<kChunksPerRow>(row, chunk) * kChunkElems;
  }
  TFO_INLINE T* ptr(int row, int col) const {
    return chunk_ptr(row, col / kChunkElems) + col % kChunkElems;
  }
  // chunk_ptr(row0 + lane_row, chunk) for row0 a multiple of 8. The swizzle then depends on
  // lane_row alone (rows 8 apart share it), so fragment loaders that walk a tile in blocks of
  // rows reuse one per-lane swizzle term instead of recomputing it for every fragment.
  TFO_INLINE T* chunk_ptr_in_block(int row0, int lane_row, int chunk) const {
    return data + (row0 + lane_row) * kCols +
           swizzle_chunk<kChunksPerRow>(lane_row, chunk) * kChunkElems;
  }
};

// All kThreads threads of the block copy a kRows x kCols tile from row-major global memory
// (gmem_row_stride elements between rows); consecutive threads take consecutive chunks of a row,
// so a wave reads contiguous global memory. Commit/wait and block_sync() are the caller's.
template <int kThreads, typename T, int kRows, int kCols>
TFO_INLINE void copy_tile_global_to_shared(const SmemTile<T, kRows, kCols>& tile, const T* gmem,
                                           int gmem_row_stride, int thread) {
  using Tile = SmemTile<T, kRows, kCols>;
  constexpr int kChunks = kRows * Tile::kChunksPerRow;
  static_assert(kChunks % kThreads == 0, "tile chunks must divide evenly among the threads");
#pragma unroll
  for (int i = 0; i < kChunks / kThreads; ++i) {
    const int linear = i * kThreads + thread;
    const int row = linear / Tile::kChunksPerRow;
    const int chunk = linear % Tile::kChunksPerRow;
    copy_global_to_shared_16b(tile.chunk_ptr(row, chunk),
                              gmem + row * gmem_row_stride + chunk * Tile::kChunkElems);
  }
}

}  // namespace tfo::gpu
