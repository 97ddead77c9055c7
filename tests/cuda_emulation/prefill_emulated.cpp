// The prefill kernels (csrc/hip/kernels/prefill) built on the CUDA backend and run under the
// warp32 host emulation, launched as the bindings launch them (tests/emulation_common/
// prefill_driver.h, with the AMD driver's entry point: one set of host tests drives both).
// Built by tests/test_cuda_emulated.py.
#define TFO_EMU32_SHARED  // the kernels declare their shared memory extern: the buffer below
#include "warp32_emulation.h"

#include "kernels/prefill/prefill_merge.h"

namespace tfo::kernels::prefill {
// The dynamic shared memory that prefill_kernel declares extern; blocks run one at a time.
alignas(128) uint8_t prefill_smem[256 * 1024];
}  // namespace tfo::kernels::prefill

unsigned char* tfo_emu32::shared_anchor = tfo::kernels::prefill::prefill_smem;

namespace {
template <typename Kernel>
void emu_launch(int grid_x, int threads, Kernel kernel, int grid_y = 1) {
  tfo_emu32::launch(grid_x, threads, kernel, grid_y);
}
}  // namespace

#include "../emulation_common/prefill_driver.h"
