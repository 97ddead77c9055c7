// Shared by the CUDA/HIP operator bindings: argument checks, the current stream, the
// device's multiprocessor count (for persistent grids sized by capacity, never by plan
// contents read on the host).
#pragma once
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

namespace flashinfer_ops {
namespace gpu_binding {

inline void check_cuda(const at::Tensor& t, const char* name, const char* op) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a GPU tensor, got ", t.device());
}

inline void check_cuda(const std::optional<at::Tensor>& t, const char* name, const char* op) {
  if (t.has_value()) check_cuda(*t, name, op);
}

inline cudaStream_t current_stream() { return at::cuda::getCurrentCUDAStream().stream(); }

inline int num_multiprocessors() {
  return at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
}

}  // namespace gpu_binding
}  // namespace flashinfer_ops
