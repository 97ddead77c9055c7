// One block of an emulated launch (tests/amd_emulation/, tests/cuda_emulation/): an OS thread per
// thread of the block, waited for with a timeout, so that a barrier some threads never reach
// (a warp or wave diverging around a cross-lane operation) fails the test run instead of
// hanging it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace tfo_emu_common {

inline constexpr int kBlockTimeoutSeconds = 300;

// Runs thread_body(t) for t = 0 .. threads - 1, each on its own OS thread, and returns once all
// have finished; aborts (naming the platform) when they have not within kBlockTimeoutSeconds.
template <typename Body>
inline void run_block_threads(int threads, Body thread_body, const char* platform) {
  std::mutex done_mutex;
  std::condition_variable done_cv;
  int done = 0;
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      thread_body(t);
      std::lock_guard<std::mutex> lock(done_mutex);
      ++done;
      done_cv.notify_one();
    });
  }
  {
    std::unique_lock<std::mutex> lock(done_mutex);
    if (!done_cv.wait_for(lock, std::chrono::seconds(kBlockTimeoutSeconds), [&] { return done == threads; })) {
      std::fprintf(stderr, "%s emulation: a block did not finish: a barrier that some of its threads never reached?\n",
                   platform);
      std::abort();
    }
  }
  for (auto& w : workers) w.join();
}

}  // namespace tfo_emu_common
