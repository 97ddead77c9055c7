// A copy of a schedule (plan_info) for the emulated decode launches whose last int32 ends where a
// page with no access begins: a kernel that reads past the buffer it was given (the decode
// kernels read items before they know the item count; decode_common.h schedule_item_ahead)
// faults there instead of reading whatever follows.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace tfo_emu_common {

class GuardedPlan {
 public:
  GuardedPlan(const int32_t* plan, int64_t size) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t bytes = static_cast<size_t>(size) * sizeof(int32_t);
    const size_t data_pages = (bytes + page - 1) / page;
    length_ = (data_pages + 1) * page;
    void* base = mmap(nullptr, length_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) std::abort();
    base_ = static_cast<uint8_t*>(base);
    uint8_t* guard = base_ + data_pages * page;
    if (mprotect(guard, page, PROT_NONE) != 0) std::abort();
    data_ = reinterpret_cast<int32_t*>(guard - bytes);
    std::memcpy(data_, plan, bytes);
  }
  ~GuardedPlan() { munmap(base_, length_); }
  GuardedPlan(const GuardedPlan&) = delete;
  GuardedPlan& operator=(const GuardedPlan&) = delete;

  const int32_t* data() const { return data_; }

 private:
  uint8_t* base_ = nullptr;
  size_t length_ = 0;
  int32_t* data_ = nullptr;
};

}  // namespace tfo_emu_common
