// Division of a kv position by the page size as one multiply and one shift.
//
// Every paged kernel turns a token position into (page, slot) once per row it copies, and the
// page size is only known at run time: a hardware-less integer division there is ~20
// instructions per row, which in the decode kernels was a third of the instructions issued per
// K/V tile. For 0 <= n < 2^31 and d >= 1, with l = ceil(log2 d),
//
//   floor(n / d) = (n * mul) >> (31 + l),   mul = ceil(2^(31 + l) / d)
//
// (Granlund and Montgomery, "Division by invariant integers using multiplication", Theorem 4.2
// with N = 31: mul * d - 2^(31 + l) < d <= 2^l). mul < 2^32 for every d, so the product is one
// 32 x 32 -> 64-bit multiply.
#pragma once

#include <cstdint>

#include "gpu_iface/platform.h"

namespace tfo::kernels {

struct PageDivisor {
  uint32_t mul = 1u << 31;
  uint32_t shift = 31;
  int32_t size = 1;  // the divisor (the page size)
};

// Host side: the divisor of a page size d >= 1.
inline PageDivisor make_page_divisor(int32_t d) {
  uint32_t l = 0;
  while ((int64_t{1} << l) < d) ++l;
  const uint64_t num = uint64_t{1} << (31 + l);
  const uint64_t mul = (num + static_cast<uint64_t>(d) - 1) / static_cast<uint64_t>(d);
  return {static_cast<uint32_t>(mul), 31 + l, d};
}

// Page index and slot of position n (0 <= n < 2^31).
struct PageSlot {
  int32_t page, slot;
};

TFO_INLINE int32_t page_of(int32_t n, const PageDivisor& d) {
  return static_cast<int32_t>((static_cast<uint64_t>(static_cast<uint32_t>(n)) * d.mul) >> d.shift);
}

TFO_INLINE PageSlot page_slot(int32_t n, const PageDivisor& d) {
  const int32_t page = page_of(n, d);
  return {page, n - page * d.size};
}

}  // namespace tfo::kernels
