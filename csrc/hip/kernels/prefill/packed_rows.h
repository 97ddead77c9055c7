// Packed query rows (row = token * group + head_in_group) visited a fixed step apart.
//
// The Q copy and the output copy-out move 16-byte chunks of a tile whose rows are packed GQA rows:
// each thread keeps one column chunk and visits rows `step` apart (step = threads / chunks per
// row). Dividing every row by the group (a multiply, a shift and the 64-bit address around them,
// ~40 instructions per 16-byte copy) cost a block more instructions than its first K/V tiles.
// Walking instead: one division for the first row, then each step adds the step's quotient to the
// token and its remainder to the head, with one carry when the head passes the group, and the
// element offset moves by a precomputed stride for each case.
#pragma once

#include <cstdint>

#include "gpu_iface/platform.h"

namespace tfo::kernels::prefill {

// Element offsets of a [token, head] layout: token * token_stride + head * head_stride.
struct RowStrides {
  int token_stride, head_stride;
};

class PackedRowWalk {
 public:
  // First row `packed` (>= 0), rows `step` apart; tokens count from first_token and the group's
  // heads from first_head in the layout. token_of divides a packed row by the group (the
  // kernel's choice of division).
  template <typename TokenOf>
  TFO_DEVICE PackedRowWalk(int packed, int step, int group, TokenOf&& token_of, int first_token,
                           int first_head, RowStrides strides)
      : group_(group) {
    const int token = token_of(packed), token_step = token_of(step);
    head_ = packed - token * group_;
    head_step_ = step - token_step * group_;
    offset_ = static_cast<int64_t>(first_token + token) * strides.token_stride +
              (first_head + head_) * strides.head_stride;
    offset_step_ = static_cast<int64_t>(token_step) * strides.token_stride + head_step_ * strides.head_stride;
    offset_carry_ = static_cast<int64_t>(strides.token_stride) - group_ * strides.head_stride;
  }
  TFO_DEVICE int64_t offset() const { return offset_; }
  // The next row: the step's quotient in tokens and remainder in heads, plus a carry of one
  // token when the head passes the group.
  TFO_DEVICE void advance() {
    head_ += head_step_;
    offset_ += offset_step_;
    if (head_ >= group_) {
      head_ -= group_;
      offset_ += offset_carry_;
    }
  }

 private:
  int group_, head_, head_step_;
  int64_t offset_, offset_step_, offset_carry_;
};

}  // namespace tfo::kernels::prefill
