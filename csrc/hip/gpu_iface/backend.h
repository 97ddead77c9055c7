// The one place that decides which backend implements the gpu_iface headers.
//
//   TFO_GPU_BACKEND_HIP   AMD CDNA (wave64, MFMA): clang -x hip, hipcc, or a host emulation that
//                         supplies the __builtin_amdgcn_* it uses (define TFO_GPU_HOST_EMULATION).
//   TFO_GPU_BACKEND_CUDA  NVIDIA sm_80+ (warp32, mma.sync): nvcc or clang -x cuda, or a host
//                         emulation (define TFO_GPU_HOST_EMULATION_CUDA) that supplies the CUDA
//                         intrinsics it uses and the tfo_emu32:: functions its PTX sites call.
//
// Only the front headers (platform.h, vec_types.h, mma.h, memory.h) test these macros; kernel code
// includes the fronts and never branches on the platform.
#pragma once

#if defined(TFO_GPU_HOST_EMULATION_CUDA)
#define TFO_GPU_BACKEND_CUDA 1
#elif defined(__HIP__) || defined(TFO_GPU_HOST_EMULATION)
#define TFO_GPU_BACKEND_HIP 1
#elif defined(__CUDACC__)
#define TFO_GPU_BACKEND_CUDA 1
#else
#error "gpu_iface: compile as HIP (clang -x hip) for AMD or as CUDA (nvcc -x cu) for NVIDIA"
#endif
