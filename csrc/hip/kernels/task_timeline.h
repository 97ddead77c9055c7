// One task's record in a profiling build's launch timeline (setup.py's TFO_TIMELINE=1; layout in
// csrc/include/timeline_record.h): the block's first thread stamps the task's start, its events
// and its end, at the points timeline_record.h names. Without the knob the type is empty and
// every call compiles to nothing.
#pragma once

#include <cstdint>

#include "../../include/timeline_record.h"
#include "gpu_iface/platform.h"
#include "gpu_iface/timeline.h"

namespace tfo::kernels {

#if defined(TFO_TIMELINE)
struct TaskTimeline {
  int64_t* record = nullptr;  // null: this thread does not stamp, or the task is past the buffer

  // buffer: tasks records of timeline::kWords, or null (no timeline this launch).
  TFO_INLINE TaskTimeline(int64_t* buffer, int32_t tasks, int32_t task) {
    namespace tl = flashinfer_ops::timeline;
    if (buffer == nullptr || task >= tasks || tfo::gpu::thread_index_x() != 0) return;
    record = buffer + static_cast<int64_t>(task) * tl::kWords;
    record[tl::kBlock] = tfo::gpu::block_index_x();
    record[tl::kMultiprocessor] = tfo::gpu::multiprocessor_id();
    record[tl::kStartNs] = tfo::gpu::global_time_ns();
    record[tl::kCycles] = tfo::gpu::cycle_count();  // event 0, the task's start
  }
  TFO_INLINE void stamp(int event) const {
    if (record != nullptr) record[flashinfer_ops::timeline::kCycles + event] = tfo::gpu::cycle_count();
  }
  // The task's last event, with the device-wide clock.
  TFO_INLINE void end(int event) const {
    if (record == nullptr) return;
    stamp(event);
    record[flashinfer_ops::timeline::kEndNs] = tfo::gpu::global_time_ns();
  }
};
#else
struct TaskTimeline {
  TFO_INLINE TaskTimeline(const int64_t*, int32_t, int32_t) {}
  TFO_INLINE void stamp(int) const {}
  TFO_INLINE void end(int) const {}
};
#endif

}  // namespace tfo::kernels
