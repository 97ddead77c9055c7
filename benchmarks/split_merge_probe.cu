// How a split request's partial results can meet, timed apart from the decode kernels: each block
// streams a slice of a cache (batch 1 kv 4k fp16's shape by default: 128 blocks of 128 KiB, 8 kv
// heads x 16 splits, 16.8 MB), reduces it to a stand-in partial (4 query heads x 128 floats and
// 4 lse, shared memory), and the 16 partials of each group are merged by one of these schemes:
//
//   read only         no merge: the floor of the slices' reads in this shape
//   last arrival      the decode kernels' scheme (split_merge.h): partials to global memory, one
//                     acquire-release add a block, the block that completes the count merges
//   cluster           the group is a thread-block cluster (sm_90): partials stay in shared memory,
//                     a cluster barrier, each block merges its 1/16 of the outputs over
//                     distributed shared memory, a second barrier before any block exits
//   ticket barrier    every block takes a ticket at its start (off the chain); at its end a
//                     release add, a spin until the group's count reaches the ticket's round,
//                     then each block merges its 1/16 of the outputs from global memory
//   flagged partials  every partial value is stored beside the round's number in one 64-bit
//                     store; each block merges its 1/16 of the outputs, polling until every value
//                     it reads carries this round (no fence, no counter on the chain)
//   flagged arrival   the flagged partials with last arrival's count, relaxed (no fence before
//                     it): the block that completes the count merges, polling until every value
//                     carries this round; no block waits for another that may not be resident
//   flagged words     flagged partials as a library would keep them: a word holds the value and
//                     its split's lse (its bits inverted, so that a zeroed word reads as empty:
//                     all-ones lse bits, a NaN the writer never stores); the block that reads a
//                     word zeroes it, so the words are empty at every launch's start with no
//                     round to count; launched cooperatively (every block resident, or the
//                     launch fails) and as a programmatic dependent launch, as the decode is
//
// The ticket barrier and flagged partials spin on other blocks, so they need every block of the grid resident at once
// (here 128 blocks of one a multiprocessor on 132; a library would take a cooperative launch).
// Every scheme's outputs are checked against last arrival's. Each call reads its own cache,
// rotating over enough caches that none is read from L2; 10 calls a CUDA graph, median of 30.
//
//   nvcc -O3 -std=c++17 -arch=sm_90a -o split_merge_probe benchmarks/split_merge_probe.cu
//   ./split_merge_probe [blocks=128] [shared KiB=140]
#include <cooperative_groups.h>
#include <cuda/atomic>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace cg = cooperative_groups;

namespace {

constexpr int kThreads = 256;
constexpr int kSliceBytes = 128 * 1024;
constexpr int kHeads = 4, kHeadDim = 128, kOut = kHeads * kHeadDim;
constexpr int kGroup = 16;            // splits a group
constexpr int kShare = kOut / kGroup;  // outputs a block merges where the merge is shared

// The slice, 16 loads of 16 bytes in flight a thread, reduced to one float a thread.
__device__ __forceinline__ float read_slice(const uint4* src) {
  float acc = 0.f;
#pragma unroll
  for (int r = 0; r < kSliceBytes / (16 * 16 * kThreads); ++r) {
    uint4 v[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) v[i] = src[(r * 16 + i) * kThreads + threadIdx.x];
#pragma unroll
    for (int i = 0; i < 16; ++i) acc += __int_as_float((v[i].x ^ v[i].y ^ v[i].z ^ v[i].w) & 0x3f7fffff);
  }
  return acc;
}

// The block's stand-in partial in shared memory (o: kOut floats, lse: kHeads), a function of the
// block's reads and of its split, so that a merge that takes the wrong split's row shows.
__device__ __forceinline__ void block_partial(const uint4* cache, float* o, float* lse) {
  __shared__ float per_thread[kThreads];
  per_thread[threadIdx.x] = read_slice(cache + static_cast<size_t>(blockIdx.x) * (kSliceBytes / 16));
  __syncthreads();
  const int split = blockIdx.x % kGroup;
  for (int i = threadIdx.x; i < kOut; i += kThreads) o[i] = per_thread[i % kThreads] * 1e-3f + i + 1000.f * split;
  if (threadIdx.x < kHeads) lse[threadIdx.x] = per_thread[threadIdx.x] * 1e-6f + 0.25f * split;
  __syncthreads();
}

// Output j of a group from its splits' lse (of j's head) and values.
template <typename Lse, typename Val>
__device__ __forceinline__ float merge_output(Lse lse_of, Val value_of) {
  float l[kGroup], m = -INFINITY;
#pragma unroll
  for (int s = 0; s < kGroup; ++s) {
    l[s] = lse_of(s);
    m = fmaxf(m, l[s]);
  }
  float num = 0.f, den = 0.f;
#pragma unroll
  for (int s = 0; s < kGroup; ++s) {
    const float w = exp2f(l[s] - m);
    den += w;
    num += w * value_of(s);
  }
  return num / den;
}

__global__ void read_only(const uint4* cache, float* out) {
  const float acc = read_slice(cache + static_cast<size_t>(blockIdx.x) * (kSliceBytes / 16));
  if (acc == 1.2345f) out[threadIdx.x] = acc;  // keeps the loads
}

__global__ void last_arrival(const uint4* cache, float* part_o, float* part_lse, int* counters, float* out) {
  __shared__ float o[kOut], lse[kHeads];
  __shared__ int completes;
  block_partial(cache, o, lse);
  const int group = blockIdx.x / kGroup;
  for (int i = threadIdx.x; i < kOut; i += kThreads) part_o[blockIdx.x * kOut + i] = o[i];
  if (threadIdx.x < kHeads) part_lse[blockIdx.x * kHeads + threadIdx.x] = lse[threadIdx.x];
  __syncthreads();
  if (threadIdx.x == 0) {
    cuda::atomic_ref<int, cuda::thread_scope_device> count(counters[group]);
    completes = count.fetch_add(1, cuda::memory_order_acq_rel) == kGroup - 1;
  }
  __syncthreads();
  if (!completes) return;
  const int base = group * kGroup;
  for (int j = threadIdx.x; j < kOut; j += kThreads) {
    out[group * kOut + j] = merge_output([&](int s) { return __ldcg(part_lse + (base + s) * kHeads + j / kHeadDim); },
                                         [&](int s) { return __ldcg(part_o + (base + s) * kOut + j); });
  }
  if (threadIdx.x == 0) counters[group] = 0;
}

__global__ void cluster_merge(const uint4* cache, float* out) {
  __shared__ float o[kOut], lse[kHeads];
  cg::cluster_group cluster = cg::this_cluster();
  block_partial(cache, o, lse);
  cluster.sync();
  const int rank = static_cast<int>(cluster.block_rank());
  if (threadIdx.x < kShare) {
    const int j = rank * kShare + threadIdx.x;
    out[blockIdx.x / kGroup * kOut + j] =
        merge_output([&](int s) { return cluster.map_shared_rank(lse, s)[j / kHeadDim]; },
                     [&](int s) { return cluster.map_shared_rank(o, s)[j]; });
  }
  cluster.sync();  // a block's shared memory outlives every read of it
}

__device__ __forceinline__ unsigned take_ticket(unsigned* tickets, int group) {
  __shared__ unsigned ticket;
  if (threadIdx.x == 0) ticket = atomicAdd(tickets + group, 1u);
  __syncthreads();
  return ticket;
}

__global__ void ticket_barrier(const uint4* cache, float* part_o, float* part_lse, unsigned* tickets,
                               unsigned* arrivals, float* out) {
  __shared__ float o[kOut], lse[kHeads];
  const int group = blockIdx.x / kGroup;
  const unsigned round_end = (take_ticket(tickets, group) / kGroup + 1) * kGroup;
  block_partial(cache, o, lse);
  for (int i = threadIdx.x; i < kOut; i += kThreads) part_o[blockIdx.x * kOut + i] = o[i];
  if (threadIdx.x < kHeads) part_lse[blockIdx.x * kHeads + threadIdx.x] = lse[threadIdx.x];
  __syncthreads();
  if (threadIdx.x == 0) {
    cuda::atomic_ref<unsigned, cuda::thread_scope_device> count(arrivals[group]);
    count.fetch_add(1u, cuda::memory_order_release);
    while (static_cast<int>(count.load(cuda::memory_order_acquire) - round_end) < 0) {
    }
  }
  __syncthreads();
  if (threadIdx.x < kShare) {
    const int j = blockIdx.x % kGroup * kShare + threadIdx.x;
    const int base = group * kGroup;
    out[group * kOut + j] = merge_output([&](int s) { return __ldcg(part_lse + (base + s) * kHeads + j / kHeadDim); },
                                         [&](int s) { return __ldcg(part_o + (base + s) * kOut + j); });
  }
}

// A value and its round in one 64-bit word: a 64-bit aligned store is seen whole or not at all.
__device__ __forceinline__ void store_flagged(unsigned long long* dst, float v, unsigned round) {
  const unsigned long long w = static_cast<unsigned long long>(round) << 32 | __float_as_uint(v);
  asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(dst), "l"(w) : "memory");
}
__device__ __forceinline__ unsigned long long load_flagged(const unsigned long long* src) {
  unsigned long long w;
  asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(w) : "l"(src) : "memory");
  return w;
}

// Output j of the group whose first split is base, once every word it reads carries this round
// (its splits' lse and values, all polled together).
__device__ __forceinline__ float merge_flagged(const unsigned long long* part_o, const unsigned long long* part_lse,
                                               int base, int j, unsigned round) {
  unsigned long long l[kGroup], v[kGroup];
  bool all;
  do {
    all = true;
#pragma unroll
    for (int s = 0; s < kGroup; ++s) {
      l[s] = load_flagged(part_lse + (base + s) * kHeads + j / kHeadDim);
      v[s] = load_flagged(part_o + (base + s) * kOut + j);
    }
#pragma unroll
    for (int s = 0; s < kGroup; ++s) all = all && (l[s] >> 32) == round && (v[s] >> 32) == round;
  } while (!all);
  return merge_output([&](int s) { return __uint_as_float(static_cast<unsigned>(l[s])); },
                      [&](int s) { return __uint_as_float(static_cast<unsigned>(v[s])); });
}

__global__ void flagged_partials(const uint4* cache, unsigned long long* part_o, unsigned long long* part_lse,
                                 unsigned* tickets, float* out) {
  __shared__ float o[kOut], lse[kHeads];
  const int group = blockIdx.x / kGroup;
  const unsigned round = take_ticket(tickets, group) / kGroup + 1;  // never 0, the buffers' first word
  block_partial(cache, o, lse);
  for (int i = threadIdx.x; i < kOut; i += kThreads) store_flagged(part_o + blockIdx.x * kOut + i, o[i], round);
  if (threadIdx.x < kHeads) store_flagged(part_lse + blockIdx.x * kHeads + threadIdx.x, lse[threadIdx.x], round);
  if (threadIdx.x < kShare) {
    const int j = blockIdx.x % kGroup * kShare + threadIdx.x;
    out[group * kOut + j] = merge_flagged(part_o, part_lse, group * kGroup, j, round);
  }
}

__global__ void flagged_arrival(const uint4* cache, unsigned long long* part_o, unsigned long long* part_lse,
                                unsigned* tickets, int* counters, float* out) {
  __shared__ float o[kOut], lse[kHeads];
  __shared__ int completes;
  const int group = blockIdx.x / kGroup;
  const unsigned round = take_ticket(tickets, group) / kGroup + 1;
  block_partial(cache, o, lse);
  for (int i = threadIdx.x; i < kOut; i += kThreads) store_flagged(part_o + blockIdx.x * kOut + i, o[i], round);
  if (threadIdx.x < kHeads) store_flagged(part_lse + blockIdx.x * kHeads + threadIdx.x, lse[threadIdx.x], round);
  __syncthreads();
  if (threadIdx.x == 0) {
    cuda::atomic_ref<int, cuda::thread_scope_device> count(counters[group]);
    completes = count.fetch_add(1, cuda::memory_order_relaxed) == kGroup - 1;
  }
  __syncthreads();
  if (!completes) return;
  for (int j = threadIdx.x; j < kOut; j += kThreads) {
    out[group * kOut + j] = merge_flagged(part_o, part_lse, group * kGroup, j, round);
  }
  if (threadIdx.x == 0) counters[group] = 0;
}

__device__ __forceinline__ unsigned long long load_volatile(const unsigned long long* src) {
  unsigned long long w;
  asm volatile("ld.volatile.global.u64 %0, [%1];" : "=l"(w) : "l"(src) : "memory");
  return w;
}

__global__ void flagged_words(const uint4* cache, unsigned long long* words, float* out) {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  __shared__ float o[kOut], lse[kHeads];
  const int group = blockIdx.x / kGroup, split = blockIdx.x % kGroup;
  block_partial(cache, o, lse);
  // Output j of split s at words[(group * kGroup + s) * kOut + j]: a split's stores and a
  // reader's loads of one split coalesce.
  for (int j = threadIdx.x; j < kOut; j += kThreads) {
    float l = lse[j / kHeadDim];
    unsigned lbits = l != l ? 0x7fffffffu : __float_as_uint(l);  // a NaN stored is never all-ones
    const unsigned long long w = static_cast<unsigned long long>(~lbits) << 32 | __float_as_uint(o[j]);
    asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(words + (size_t(group) * kGroup + split) * kOut + j),
                 "l"(w) : "memory");
  }
  if (threadIdx.x < kShare) {
    const int j = split * kShare + threadIdx.x;
    unsigned long long* mine = words + size_t(group) * kGroup * kOut + j;
    unsigned long long v[kGroup];
    bool all;
    do {
      all = true;
#pragma unroll
      for (int s = 0; s < kGroup; ++s) v[s] = load_volatile(mine + s * kOut);
#pragma unroll
      for (int s = 0; s < kGroup; ++s) all = all && (v[s] >> 32) != 0;
    } while (!all);
#pragma unroll
    for (int s = 0; s < kGroup; ++s) mine[s * kOut] = 0;  // empty for the next launch
    out[group * kOut + j] = merge_output([&](int s) { return __uint_as_float(~static_cast<unsigned>(v[s] >> 32)); },
                                         [&](int s) { return __uint_as_float(static_cast<unsigned>(v[s])); });
  }
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

#define CHECK(x)                                                              \
  do {                                                                        \
    cudaError_t e_ = (x);                                                     \
    if (e_ != cudaSuccess) {                                                  \
      std::printf("%s: %s\n", #x, cudaGetErrorString(e_));                    \
      std::exit(1);                                                           \
    }                                                                         \
  } while (0)

}  // namespace

int main(int argc, char** argv) {
  const int blocks = argc > 1 ? std::atoi(argv[1]) : 128;
  const int smem = (argc > 2 ? std::atoi(argv[2]) : 140) * 1024;  // reserved: blocks a multiprocessor
  if (blocks <= 0 || blocks % kGroup != 0) {
    std::printf("blocks: a positive multiple of %d\n", kGroup);
    return 1;
  }
  const int groups = blocks / kGroup;
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("# %s (%d SMs); %d blocks of %d threads, %d KiB of shared memory each, groups of %d\n", prop.name,
              prop.multiProcessorCount, blocks, kThreads, smem / 1024, kGroup);

  const size_t cache_bytes = static_cast<size_t>(blocks) * kSliceBytes;
  const int caches = static_cast<int>(std::max<size_t>(2, (2 * prop.l2CacheSize) / cache_bytes + 2));
  std::vector<uint4*> cache(caches);
  for (auto& c : cache) {
    CHECK(cudaMalloc(&c, cache_bytes));
    CHECK(cudaMemset(c, 0x11, cache_bytes));
  }
  float *part_o, *part_lse, *out;
  unsigned long long *flag_o, *flag_lse, *flag2_o, *flag2_lse, *words;
  int* counters;
  unsigned *tickets, *arrivals;
  CHECK(cudaMalloc(&part_o, blocks * kOut * 4));
  CHECK(cudaMalloc(&part_lse, blocks * kHeads * 4));
  CHECK(cudaMalloc(&flag_o, blocks * kOut * 8));
  CHECK(cudaMalloc(&flag_lse, blocks * kHeads * 8));
  CHECK(cudaMalloc(&flag2_o, blocks * kOut * 8));
  CHECK(cudaMalloc(&flag2_lse, blocks * kHeads * 8));
  CHECK(cudaMemset(flag2_o, 0, blocks * kOut * 8));
  CHECK(cudaMalloc(&words, blocks * kOut * 8));
  CHECK(cudaMemset(words, 0, blocks * kOut * 8));
  CHECK(cudaMemset(flag2_lse, 0, blocks * kHeads * 8));
  CHECK(cudaMalloc(&out, groups * kOut * 4));
  CHECK(cudaMalloc(&counters, 2 * groups * 4));
  CHECK(cudaMalloc(&tickets, 3 * groups * 4));
  CHECK(cudaMalloc(&arrivals, groups * 4));
  CHECK(cudaMemset(flag_o, 0, blocks * kOut * 8));
  CHECK(cudaMemset(flag_lse, 0, blocks * kHeads * 8));
  CHECK(cudaMemset(counters, 0, 2 * groups * 4));
  CHECK(cudaMemset(tickets, 0, 3 * groups * 4));
  CHECK(cudaMemset(arrivals, 0, groups * 4));

  const void* kernels[] = {(const void*)read_only, (const void*)last_arrival, (const void*)cluster_merge,
                           (const void*)ticket_barrier, (const void*)flagged_partials,
                           (const void*)flagged_arrival, (const void*)flagged_words, (const void*)flagged_words};
  const char* names[] = {"read only", "last arrival", "cluster", "ticket barrier", "flagged partials",
                         "flagged arrival", "flagged words", "flagged words, cooperative"};
  constexpr int kSchemes = 8;
  // Dynamic shared memory only reserves room (as the decode kernels' stages would).
  for (const void* k : kernels) CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  CHECK(cudaFuncSetAttribute(kernels[2], cudaFuncAttributeNonPortableClusterSizeAllowed, 1));

  cudaStream_t stream;
  CHECK(cudaStreamCreate(&stream));
  auto launch = [&](int scheme, int c) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(blocks);
    cfg.blockDim = dim3(kThreads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = kGroup;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = scheme == 2 ? 1 : 0;
    if (scheme == 7) {
      attr[0].id = cudaLaunchAttributeCooperative;
      attr[0].val.cooperative = 1;
      attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attr[1].val.programmaticStreamSerializationAllowed = 1;
      cfg.numAttrs = 2;
    }
    if (scheme == 2) {
      int active = 0;
      CHECK(cudaOccupancyMaxActiveClusters(&active, kernels[2], &cfg));
      static bool said = false;
      if (!said) std::printf("# clusters of %d resident at once: %d (%d needed)\n", kGroup, active, groups);
      said = true;
    }
    const uint4* src = cache[c];
    switch (scheme) {
      case 0: CHECK(cudaLaunchKernelEx(&cfg, read_only, src, out)); break;
      case 1: CHECK(cudaLaunchKernelEx(&cfg, last_arrival, src, part_o, part_lse, counters, out)); break;
      case 2: CHECK(cudaLaunchKernelEx(&cfg, cluster_merge, src, out)); break;
      case 3: CHECK(cudaLaunchKernelEx(&cfg, ticket_barrier, src, part_o, part_lse, tickets, arrivals, out)); break;
      case 4: CHECK(cudaLaunchKernelEx(&cfg, flagged_partials, src, flag_o, flag_lse, tickets + groups, out)); break;
      case 5:
        CHECK(cudaLaunchKernelEx(&cfg, flagged_arrival, src, flag2_o, flag2_lse, tickets + 2 * groups,
                                 counters + groups, out));
        break;
      case 6:
      case 7: CHECK(cudaLaunchKernelEx(&cfg, flagged_words, src, words, out)); break;
    }
  };

  // Outputs: every merging scheme against last arrival on the same cache.
  std::vector<float> want(groups * kOut), got(groups * kOut);
  launch(1, 0);
  CHECK(cudaStreamSynchronize(stream));
  CHECK(cudaMemcpy(want.data(), out, want.size() * 4, cudaMemcpyDeviceToHost));
  bool ok = true;
  for (int scheme = 2; scheme < kSchemes; ++scheme) {
    CHECK(cudaMemset(out, 0, groups * kOut * 4));
    for (int rep = 0; rep < 3; ++rep) launch(scheme, 0);  // later rounds too
    CHECK(cudaStreamSynchronize(stream));
    CHECK(cudaMemcpy(got.data(), out, got.size() * 4, cudaMemcpyDeviceToHost));
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      worst = std::max(worst, std::fabs(double(got[i]) - want[i]) / (1 + std::fabs(want[i])));
    }
    std::printf("# %s against last arrival: largest relative difference %.2g\n", names[scheme], worst);
    ok = ok && worst < 1e-5;
  }

  constexpr int kCalls = 10, kSamples = 30;
  std::vector<cudaGraphExec_t> graphs(kSchemes);
  for (int scheme = 0; scheme < kSchemes; ++scheme) {
    cudaGraph_t g;
    CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < kCalls; ++i) launch(scheme, i % caches);
    CHECK(cudaStreamEndCapture(stream, &g));
    CHECK(cudaGraphInstantiate(&graphs[scheme], g, 0));
  }
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  std::vector<std::vector<float>> us(kSchemes);
  for (int warm = 0; warm < 3; ++warm)
    for (auto& g : graphs) CHECK(cudaGraphLaunch(g, stream));
  for (int s = 0; s < kSamples; ++s) {
    for (int scheme = 0; scheme < kSchemes; ++scheme) {  // interleaved
      CHECK(cudaEventRecord(e0, stream));
      CHECK(cudaGraphLaunch(graphs[scheme], stream));
      CHECK(cudaEventRecord(e1, stream));
      CHECK(cudaEventSynchronize(e1));
      float ms;
      CHECK(cudaEventElapsedTime(&ms, e0, e1));
      us[scheme].push_back(ms * 1000.f / kCalls);
    }
  }
  std::printf("| scheme | us a call (median) | min | over read only |\n| --- | --- | --- | --- |\n");
  std::sort(us[0].begin(), us[0].end());
  for (int scheme = 0; scheme < kSchemes; ++scheme) {
    std::sort(us[scheme].begin(), us[scheme].end());
    std::printf("| %s | %.2f | %.2f | %+.2f |\n", names[scheme], us[scheme][kSamples / 2], us[scheme][0],
                us[scheme][kSamples / 2] - us[0][kSamples / 2]);
  }
  return ok ? 0 : 1;
}
