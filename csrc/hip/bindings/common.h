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

// The dynamic shared memory one block may opt in to on the current device (NVIDIA: 227 KiB on
// sm_90, 163 KiB on sm_80, 99 KiB on sm_86/sm_89).
inline size_t max_block_shared_memory() {
#if defined(USE_ROCM)
  return at::cuda::getCurrentDeviceProperties()->sharedMemPerBlock;
#else
  return at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin;
#endif
}

// Programmatic dependent launch (NVIDIA sm_90+): the launch may begin while the stream's
// previous kernel finishes, and the kernel waits for it in grid_dependency_wait() before it
// touches memory, so the launch's latency overlaps the previous kernel's tail. FlashInfer's
// enable_pdl.
inline bool device_supports_pdl() {
#if defined(USE_ROCM)
  return false;
#else
  return at::cuda::getCurrentDeviceProperties()->major >= 9;
#endif
}

// enable_pdl refused where the current device (the caller's guard sets it) has no such launch.
inline void check_pdl(bool enable_pdl, const char* op) {
  TORCH_CHECK(!enable_pdl || device_supports_pdl(), op,
              ": enable_pdl needs programmatic dependent launch (NVIDIA sm_90 or newer)");
}

#if !defined(USE_ROCM)
// cudaLaunchKernelEx of kernel(args...) with the given launch attributes; returns its error.
template <typename... Params, typename... Args>
cudaError_t launch_kernel_ex(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                             cudaLaunchAttribute* attributes, unsigned num_attributes, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attributes;
  config.numAttrs = num_attributes;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

// The programmatic dependent launch attribute (launch_kernel's pdl).
inline cudaLaunchAttribute pdl_attribute() {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  return attribute;
}
#endif

// kernel<<<grid, block, smem, stream>>>(args...), as a programmatic dependent launch when pdl.
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   bool pdl, Args&&... args) {
#if !defined(USE_ROCM)
  if (pdl) {
    cudaLaunchAttribute attribute = pdl_attribute();
    C10_CUDA_CHECK(launch_kernel_ex(kernel, grid, block, smem, stream, &attribute, 1, std::forward<Args>(args)...));
    return;
  }
#endif
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
}

#if !defined(USE_ROCM)
// As launch_kernel, as a cooperative launch: every block resident at once, or no launch. Returns
// false, launching nothing, where the device cannot hold the grid at once (cudaErrorCooperative-
// LaunchTooLarge: a device shared under MPS or a partition with fewer multiprocessors), so that
// the caller can launch without needing that; any other error throws.
template <typename... Params, typename... Args>
bool launch_kernel_cooperative(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                               bool pdl, Args&&... args) {
  cudaLaunchAttribute attributes[2] = {};
  attributes[0].id = cudaLaunchAttributeCooperative;
  attributes[0].val.cooperative = 1;
  attributes[1] = pdl_attribute();
  const cudaError_t err =
      launch_kernel_ex(kernel, grid, block, smem, stream, attributes, pdl ? 2 : 1, std::forward<Args>(args)...);
  if (err == cudaErrorCooperativeLaunchTooLarge) {
    (void)cudaGetLastError();
    return false;
  }
  C10_CUDA_CHECK(err);
  return true;
}
#endif

}  // namespace gpu_binding
}  // namespace flashinfer_ops
