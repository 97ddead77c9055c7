// Clocks for a profiling build's per-task launch timelines (TFO_TIMELINE; kernels/task_timeline.h
// writes them). Without that knob nothing here is compiled, so production kernels are untouched.
//
// Contract (namespace tfo::gpu), implemented by backend/<vendor>/timeline.h:
//   global_time_ns()      a device-wide clock in nanoseconds, comparable across blocks (NVIDIA
//                         %globaltimer; AMD s_memrealtime, a constant 100 MHz on CDNA3)
//   cycle_count()         this multiprocessor's cycle counter (NVIDIA clock64; AMD s_memtime)
//   multiprocessor_id()   where the block runs: NVIDIA %smid; AMD the HW_ID register as read
//                         (gfx9: CU_ID bits 8-11, SH_ID bit 12, SE_ID bits 13-15)
#pragma once

#if defined(TFO_TIMELINE)
#include "gpu_iface/platform.h"

#if defined(TFO_GPU_BACKEND_HIP)
#include "gpu_iface/backend/hip/timeline.h"
#else
#include "gpu_iface/backend/cuda/timeline.h"
#endif
#endif
