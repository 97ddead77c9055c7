// The host-to-device traffic of one plan() (torch_flashinfer_ops/_upload.py says why it is
// shaped this way): int32 arrays from the host gathered into one pinned block of the caching
// host allocator, one copy for the arrays without a fixed home (the results are views of one
// device tensor) and one per array with a fixed home. Arrays already on the device are used as
// they are, or copied device to device into their fixed home. In C++ because a serving loop
// pays it every step, and each tensor operation called from Python costs the host several
// microseconds of argument handling that the same operation called here does not.
#include <ATen/ATen.h>
#include <pybind11/pybind11.h>
#include <torch/extension.h>

#include <cstring>
#include <optional>
#include <vector>

namespace flashinfer_ops {
namespace cpu {
namespace {

// Arrays that share one device tensor start on 128-byte boundaries, as separate allocations
// would, so a kernel's wide loads of one array stay aligned.
constexpr int64_t kAlignElems = 32;

int64_t aligned(int64_t n) { return (n + kAlignElems - 1) / kAlignElems * kAlignElems; }

// stage: gather host sources into one block (pinned when device is a GPU); plan() stages for a
// GPU only, tests also for the host.
std::vector<at::Tensor> upload(const std::vector<at::Tensor>& sources,
                               const std::vector<std::optional<at::Tensor>>& destinations,
                               at::Device device, bool non_blocking, bool stage) {
  TORCH_CHECK(sources.size() == destinations.size(), "upload: ", sources.size(), " sources but ",
              destinations.size(), " destinations");
  const size_t n = sources.size();
  std::vector<at::Tensor> results(n);
  std::vector<size_t> free, fixed;  // host sources headed for a fresh home / a fixed one
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& source = sources[i];
    TORCH_CHECK(source.dim() == 1, "upload: sources must be 1-D");
    if (destinations[i]) {
      TORCH_CHECK_VALUE(destinations[i]->numel() == source.numel(), "upload: destination holds ",
                        destinations[i]->numel(), " entries, source ", source.numel());
    }
    if (!stage || !source.device().is_cpu()) {
      at::Tensor src = source.to(at::kInt).contiguous();
      results[i] = destinations[i] ? destinations[i]->copy_(src, non_blocking) : src.to(device);
    } else {
      (destinations[i] ? fixed : free).push_back(i);
    }
  }
  if (free.empty() && fixed.empty()) return results;

  std::vector<int64_t> offsets(n, 0);
  int64_t total = 0;
  for (const auto* group : {&free, &fixed}) {  // the fresh-home arrays first: they go up as one prefix
    for (size_t i : *group) {
      offsets[i] = total;
      total += aligned(sources[i].numel());
    }
  }
  const int64_t free_total = fixed.empty() ? total : offsets[fixed.front()];
  at::Tensor staged = at::empty({total}, at::TensorOptions().dtype(at::kInt).pinned_memory(device.is_cuda()));
  for (const auto* group : {&free, &fixed}) {
    for (size_t i : *group) {
      const at::Tensor& source = sources[i];
      if (source.numel() == 0) continue;  // an empty array's data pointer may be null
      if (source.scalar_type() == at::kInt && source.is_contiguous()) {
        std::memcpy(staged.data_ptr<int32_t>() + offsets[i], source.data_ptr<int32_t>(),
                    sizeof(int32_t) * source.numel());
      } else {
        staged.narrow(0, offsets[i], source.numel()).copy_(source);
      }
    }
  }
  if (!free.empty()) {
    const at::Tensor block = staged.narrow(0, 0, free_total).to(device, at::kInt, non_blocking);
    for (size_t i : free) results[i] = block.narrow(0, offsets[i], sources[i].numel());
  }
  for (size_t i : fixed) {
    results[i] = destinations[i]->copy_(staged.narrow(0, offsets[i], sources[i].numel()), non_blocking);
  }
  return results;
}

}  // namespace

void bind_upload(pybind11::module_& m) {
  m.def("upload", &upload, "(sources, destinations, device, non_blocking, stage) -> results; see upload.cpp");
}

}  // namespace cpu
}  // namespace flashinfer_ops
