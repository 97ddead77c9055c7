// The prefill kernels (csrc/hip/kernels/prefill) built on the AMD backend and run under the
// wave64 host emulation, launched as the bindings launch them (tests/emulation_common/
// prefill_driver.h). Built by tests/test_amd_emulated.py per arch.
#define TFO_SHARED  // the kernels declare their shared memory extern: the buffer below
#include "wave64_emulation.h"

#include "kernels/prefill/prefill_merge.h"

namespace tfo::kernels::prefill {
// The dynamic shared memory that prefill_kernel declares extern; blocks run one at a time.
alignas(16) uint8_t prefill_smem[128 * 1024];
}  // namespace tfo::kernels::prefill

namespace {
template <typename Kernel>
void emu_launch(int grid_x, int threads, Kernel kernel, int grid_y = 1) {
  tfo_emu::launch(grid_x, threads, 1, kernel, grid_y);
}
}  // namespace

#include "../emulation_common/prefill_driver.h"
