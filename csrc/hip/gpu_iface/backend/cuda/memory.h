// NVIDIA sm_80+: cp.async global -> shared, and the shared-memory swizzle.
#pragma once

#include <cstdint>

namespace tfo::gpu {

TFO_INLINE uint32_t shared_address(const void* smem) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(smem));
}

// Fragment loads address tiles with rows of 8 or more chunks by XOR on the low 7 bits of the
// shared address (mma.h), which is exact only for 128-byte aligned tiles: kernels call this on
// their shared-memory base, whose tile offsets are multiples of 128 bytes.
TFO_INLINE void check_tile_alignment(const void* smem) {
  if (shared_address(smem) % 128 != 0) __trap();
}

// cp.async.cg bypasses L1; a source size of 0 makes it write 16 zero bytes without reading.
// L2::128B lets L2 fetch the whole 128-byte line from DRAM on the first sector's miss (the
// copies stream rows of 128 bytes or more): on the H200 the tensor-core paged decode read
// 85-91% of the copy bandwidth with it against 83-89% without, and less again with L2::256B.
TFO_INLINE void copy_global_to_shared_16b(void* smem, const void* gmem, bool in_bounds = true) {
  const int src_bytes = in_bounds ? 16 : 0;
#if defined(TFO_GPU_HOST_EMULATION_CUDA)
  tfo_emu32::cp_async_16(smem, gmem, src_bytes);
#else
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(shared_address(smem)),
               "l"(gmem), "r"(src_bytes)
               : "memory");
#endif
}

struct alignas(16) Words16 {
  uint32_t w[4];
};

// A relaxed (strong, GPU-scope) load: the assembler keeps it in program order ahead of the loads
// after it, where a plain ld.global whose words are only stored later is sunk below the branches
// and dependent index loads that follow, putting its latency on their chain. Served by L2, as a
// read-once stream would be anyway.
TFO_INLINE Words16 load_global_16b_first(const void* gmem) {
  Words16 r;
#if defined(TFO_GPU_HOST_EMULATION_CUDA)
  tfo_emu32::load_relaxed_16b(r.w, gmem);
#else
  asm volatile("ld.relaxed.gpu.global.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r.w[0]), "=r"(r.w[1]), "=r"(r.w[2]), "=r"(r.w[3])
               : "l"(gmem)
               : "memory");
#endif
  return r;
}

inline constexpr bool kAsyncCopies = true;
#define TFO_IF_ASYNC_COPIES(...) __VA_ARGS__

#if defined(TFO_GPU_HOST_EMULATION_CUDA)
TFO_INLINE void copy_commit_group() { tfo_emu32::cp_async_commit(); }

template <int kPending>
TFO_INLINE void copy_wait_groups() {
  tfo_emu32::cp_async_wait(kPending);
}
#else
TFO_INLINE void copy_commit_group() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

template <int kPending>
TFO_INLINE void copy_wait_groups() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}
#endif

// 32 banks x 4 bytes: a 128-byte line holds 8 chunks. ldmatrix gathers 8 rows' chunks per phase
// (and cp.async writes 8 chunks per phase); XOR-ing the chunk with the row index modulo 8 puts 8
// consecutive rows at the same logical chunk in 8 different bank groups. Rows narrower than a
// line share one, so the row index is first divided by the rows per line.
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
