// Which kernel families this build contains (queried from Python for routing). GPU builds
// may instantiate a subset of head dims and dtypes (setup.py's TFO_HEAD_DIMS / TFO_DTYPES);
// the same macros reach this file, so routing never sends a call to a missing instantiation.
#include <cstdint>
#include <stdexcept>
#include <string>

namespace flashinfer_ops {

bool gpu_kernels_built() {
#ifdef TFO_WITH_GPU_KERNELS
  return true;
#else
  return false;
#endif
}

// "head_dim,head_dim,...;dtype,dtype,..." of the GPU instantiations ("" without GPU kernels).
std::string gpu_instantiations() {
  std::string dims, dtypes;
  auto add = [](std::string& list, const char* item) {
    if (!list.empty()) list += ",";
    list += item;
  };
#ifdef TFO_HEAD_DIM_64
  add(dims, "64");
#endif
#ifdef TFO_HEAD_DIM_128
  add(dims, "128");
#endif
#ifdef TFO_HEAD_DIM_256
  add(dims, "256");
#endif
#ifdef TFO_DTYPE_F16
  add(dtypes, "float16");
#endif
#ifdef TFO_DTYPE_BF16
  add(dtypes, "bfloat16");
#endif
  return gpu_kernels_built() ? dims + ";" + dtypes : std::string();
}

// Whether the GPU kernels record launch timelines (setup.py's TFO_TIMELINE=1, a profiling build).
bool timeline_built() {
#if defined(TFO_WITH_GPU_KERNELS) && defined(TFO_TIMELINE)
  return true;
#else
  return false;
#endif
}

// The kernel variants under evaluation this build's GPU kernels were built with (setup.py's
// TFO_KERNEL_VARIANTS; csrc/hip/kernels/kernel_variants.h), comma-separated; "" for the default
// kernels. One #ifdef per switch of kernel_variants.h (tests/test_kernel_variants.py checks both
// lists agree).
std::string kernel_variants_built() {
  std::string names;
  auto add = [&](const char* name) {
    if (!names.empty()) names += ",";
    names += name;
  };
#ifdef TFO_VARIANT_PREFILL_PLANNED_T_STAGE_D64
  add("prefill_planned_t_stage_d64");
#endif
  (void)add;
  return gpu_kernels_built() ? names : std::string();
}

#ifndef TFO_WITH_GPU_KERNELS
namespace gpu_binding {
// Without GPU kernels there is no decode grid (the GPU build defines this in bindings/decode.cu).
int64_t decode_grid_blocks(const std::string&, const std::string&, int64_t, int64_t, int64_t, bool) {
  return 0;
}
// Nor a wide decode shape, nor a four-block CUDA-core grid.
int64_t decode_wide_tasks(const std::string&, const std::string&, int64_t, int64_t, int64_t, bool) { return 0; }
int64_t decode_four_block_grid(const std::string&, const std::string&, int64_t, int64_t, int64_t, bool) { return 0; }
// Nor a prefill grid (bindings/prefill.cu).
int64_t prefill_grid_blocks(const std::string&, int64_t, bool, bool, bool) { return 0; }
// Nor a timeline to record (bindings/decode.cu).
void set_decode_timeline(int64_t, int64_t) {
  throw std::runtime_error("set_decode_timeline: this build has no GPU kernels");
}
}  // namespace gpu_binding
#endif

}  // namespace flashinfer_ops
