// The fragment probe kernel (csrc/hip/kernels/tile_gemm_probe.cu) built on the AMD backend and run
// under the wave64 host emulation. Built twice by tests/test_amd_emulated.py: as gfx942 (K = 32
// fragments through two 16x16x16 MFMAs) and with __gfx950__ defined (one 16x16x32 MFMA).
#include "wave64_emulation.h"

#include "kernels/tile_gemm_probe.cu"

namespace {

using tfo::kernels::BLayout;

template <typename T, BLayout kB, int kK>
void run(const void* a, const void* b, float* c, float* row_max, float* row_sum) {
  tfo_emu::launch(1, tfo::kernels::kProbeThreads, 1, [&] {
    tfo::kernels::tile_gemm_probe_kernel<T, kB, kK>(static_cast<const T*>(a), static_cast<const T*>(b), c,
                                                    row_max, row_sum);
  });
}

}  // namespace

// dtype: 0 float16, 1 bfloat16. b_layout: 0 B given as [n][k] (K = 32 fragments), 1 as [k][n]
// (K = 16 fragments). Returns 0, or -1 for a combination the probe does not instantiate.
extern "C" __attribute__((visibility("default"))) int tfo_emu_tile_gemm_probe(int dtype, int b_layout, const void* a, const void* b, float* c,
                                       float* row_max, float* row_sum) {
  using tfo::gpu::bf16_t;
  using tfo::gpu::half_t;
  if (b_layout == 0) {
    if (dtype == 0) run<half_t, BLayout::kNK, 32>(a, b, c, row_max, row_sum);
    else run<bf16_t, BLayout::kNK, 32>(a, b, c, row_max, row_sum);
  } else if (b_layout == 1) {
    if (dtype == 0) run<half_t, BLayout::kKN, 16>(a, b, c, row_max, row_sum);
    else run<bf16_t, BLayout::kKN, 16>(a, b, c, row_max, row_sum);
  } else {
    return -1;
  }
  return 0;
}
