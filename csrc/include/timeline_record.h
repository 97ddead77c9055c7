// Layout of a profiling build's launch timeline (setup.py's TFO_TIMELINE=1): one record of
// kWords int64 per task a kernel runs, written by the task's first thread and read on the host
// (benchmarks/decode_timeline.py mirrors these numbers). Torch-free: the kernels and the
// bindings share it.
//
//   [kBlock]           the block that ran the task
//   [kMultiprocessor]  where it ran: NVIDIA %smid; AMD the HW_ID register as read (CU, SH and SE
//                      fields, see gpu_iface/timeline.h)
//   [kStartNs]         device-wide clock at the task's start, nanoseconds (NVIDIA %globaltimer;
//                      AMD s_memrealtime's ticks scaled to ns), comparable across blocks
//   [kEndNs]           the same clock at its last event
//   [kCycles + e]      the multiprocessor's cycle counter at event e (clock64 / s_memtime):
//                      exact within the block, not comparable across multiprocessors
//
// Unwritten words keep what the host filled the buffer with (the reader fills -1).
#pragma once
#include <cstdint>

namespace flashinfer_ops::timeline {

constexpr int kBlock = 0;
constexpr int kMultiprocessor = 1;
constexpr int kStartNs = 2;
constexpr int kEndNs = 3;
constexpr int kCycles = 4;
constexpr int kEvents = 6;
constexpr int kWords = kCycles + kEvents;

// The decode kernels' events, in the order a task passes them (decode_mma.cu at block-wide
// points; decode_simt.cu's first tile and tiles done are its thread 0's own rows and loop).
enum DecodeEvent : int {
  kTaskStart = 0,  // the task's turn in the block's loop (for a block's first task: its start)
  kWaitDone = 1,   // past grid_dependency_wait(): the launch before has finished
  kFirstTile = 2,  // the first K/V tile has landed in shared memory
  kTilesDone = 3,  // every tile is done
  kCombined = 4,   // the waves' outputs are combined and stored (a split: its partial rows)
  kFinished = 5,   // a split's arrival counted and, for the last split, the merge done
};

}  // namespace flashinfer_ops::timeline
