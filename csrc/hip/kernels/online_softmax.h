// The running maximum of the online softmax (base 2), shared by the prefill and decode kernels.
//
// A row's exponentials are taken against a running maximum m: p = 2^(s - m), O and l accumulate
// in float32 relative to m, and lse = m + log2(l). m need not be the row's true maximum, only
// one that every p stays representable under: so it moves only when a tile's maximum passes it
// by more than kRescaleSlackLog2, and O (the costly part: a multiply per accumulator element) is
// rescaled a few times per row rather than on most tiles while the maxima still creep up.
// Probabilities then reach at most 2^8: as fp16/bf16 matrix operands exact to the same relative
// precision as below 1, and far inside fp16's range.
#pragma once

#include "gpu_iface/platform.h"

namespace tfo::kernels {

inline constexpr float kRescaleSlackLog2 = 8.0f;

// The running maximum after a tile whose maximum is tile_max (-inf: nothing seen, and -inf +
// slack is -inf, so the first finite tile maximum is always taken).
TFO_INLINE float next_running_max(float m, float tile_max) {
  return tile_max > m + kRescaleSlackLog2 ? tile_max : m;
}

}  // namespace tfo::kernels
