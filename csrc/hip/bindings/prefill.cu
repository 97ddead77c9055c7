// CUDA/HIP dispatch of the prefill operators: argument checks (shapes, dtypes, strides; never
// the contents of device arrays), then one launch of prefill_kernel and, for batches, one of
// merge_partials_kernel (with enable_pdl, both programmatic dependent launches). No host
// synchronisation and no allocation outside PyTorch's caching allocator; batch grids are sized
// from the device, not from the plan, so captured graphs replay any later plan.
#include <c10/cuda/CUDAException.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "../../include/single_prefill_split.h"
#include "common.h"
#include "kernels/prefill/prefill_configs.h"
#include "kernels/prefill/prefill_merge.h"

namespace flashinfer_ops {
namespace {

namespace pk = tfo::kernels::prefill;
using gpu_binding::check_cuda;
using gpu_binding::check_pdl;

constexpr int64_t kLayoutNHD = 0, kLayoutHND = 1;

template <typename T>
constexpr at::ScalarType scalar_type_of();
template <>
constexpr at::ScalarType scalar_type_of<tfo::gpu::half_t>() {
  return at::kHalf;
}
template <>
constexpr at::ScalarType scalar_type_of<tfo::gpu::bf16_t>() {
  return at::kBFloat16;
}

// "float16/64, float16/128, ..." for the errors: the configurations this build instantiates.
std::string served_configs() {
  std::string s;
  auto add = [&s](at::ScalarType dtype, int head_dim) {
    if (!s.empty()) s += ", ";
    s += dtype == at::kHalf ? "float16/" : "bfloat16/";
    s += std::to_string(head_dim);
  };
#define TFO_PREFILL_NAME(T, D) add(scalar_type_of<T>(), D);
  TFO_PREFILL_FOR_EACH_CONFIG(TFO_PREFILL_NAME)
#undef TFO_PREFILL_NAME
  return s;
}

// Resident blocks per multiprocessor of one instantiation (an occupancy query, asked once; it
// also lifts the kernel's dynamic shared memory limit, which every launch needs).
template <typename T, int kHeadDim, bool kPaged, bool kPlanned, bool kTransformScores, bool kMasked,
          bool kSplitKv = false, bool kFewTiles = false>
int blocks_per_multiprocessor() {
  using Policy = pk::PrefillPolicy<kHeadDim, kPlanned, kTransformScores, kMasked>;
  static const int blocks = [] {
    auto* kernel =
        &pk::prefill_kernel<T, kHeadDim, kPaged, kPlanned, kTransformScores, kMasked, kSplitKv, kFewTiles>;
    C10_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, Policy::kSmemBytes));
    int n = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, Policy::kThreads, Policy::kSmemBytes));
    return n > 0 ? n : 1;
  }();
  return blocks;
}

// The persistent grid of a planned launch: as many blocks as the device holds at once. plan()
// asks for the same number (prefill_grid_blocks) to build the schedule's work lists.
template <typename T, int kHeadDim, bool kPaged, bool kTransformScores, bool kMasked>
int planned_grid_blocks() {
  return gpu_binding::num_multiprocessors() *
         blocks_per_multiprocessor<T, kHeadDim, kPaged, true, kTransformScores, kMasked>();
}

// The most kv chunks per q tile a single-request launch takes: TFO_SINGLE_PREFILL_MAX_SPLITS
// when set (1: never split; for measuring the split), else the policy's own bound.
int single_prefill_max_splits() {
  const char* env = std::getenv("TFO_SINGLE_PREFILL_MAX_SPLITS");
  if (env == nullptr || *env == '\0') return flashinfer_ops::single_split::kMaxSplits;
  const int n = std::atoi(env);
  return n > 1 ? n : 1;
}

// The most K/V tiles per block for which an unsplit single-request launch takes the kFewTiles
// instantiation (where the policy has two epilogues): TFO_SINGLE_PREFILL_FEW_TILES_MAX when set
// (0: never; for measuring either epilogue at any length), else pk::kFewTilesMax.
int single_prefill_few_tiles_max() {
  const char* env = std::getenv("TFO_SINGLE_PREFILL_FEW_TILES_MAX");
  if (env == nullptr || *env == '\0') return pk::kFewTilesMax;
  return std::atoi(env);
}

template <typename T, int kHeadDim, bool kPaged, bool kPlanned, bool kTransformScores, bool kMasked = false>
void launch_scores(const pk::PrefillParams& params, int64_t qo_tokens, bool pdl) {
  using Policy = pk::PrefillPolicy<kHeadDim, kPlanned, kTransformScores, kMasked>;
  auto* kernel = &pk::prefill_kernel<T, kHeadDim, kPaged, kPlanned, kTransformScores, kMasked>;
  constexpr int kSmem = Policy::kSmemBytes;
  blocks_per_multiprocessor<T, kHeadDim, kPaged, kPlanned, kTransformScores, kMasked>();  // sets the smem limit
  const cudaStream_t stream = gpu_binding::current_stream();
  if constexpr (!kPlanned) {
    namespace ss = flashinfer_ops::single_split;
    const int group = params.num_qo_heads / params.num_kv_heads;
    const int64_t rows = qo_tokens * group;
    const int64_t tiles = (rows + Policy::kTileRows - 1) / Policy::kTileRows;
    if (tiles == 0) return;
    TORCH_CHECK(rows < (int64_t{1} << 31), "single_prefill: problem too large for one launch");
    // Split over kv where the launch would leave most of the GPU idle (single_prefill_split.h).
    const ss::Geometry g = pk::single_geometry(params, group, Policy::kTileRows, Policy::kKvTile);
    const int slots = gpu_binding::num_multiprocessors() *
                      blocks_per_multiprocessor<T, kHeadDim, kPaged, kPlanned, kTransformScores, kMasked>();
    const ss::Split split = ss::choose_single_prefill_split(g, params.num_kv_heads, slots, single_prefill_max_splits());
    // (kv heads, units): units past kSingleGridRows continue in z (prefill_kernel.h).
    auto grid_of = [&](int64_t units) {
      const int64_t z = (units + pk::kSingleGridRows - 1) / pk::kSingleGridRows;
      TORCH_CHECK(units < (int64_t{1} << 31) && z <= 65535, "single_prefill: problem too large for one launch");
      return dim3(static_cast<unsigned>(params.num_kv_heads),
                  static_cast<unsigned>(std::min<int64_t>(units, pk::kSingleGridRows)), static_cast<unsigned>(z));
    };
    if (split.splits == 1) {
      if constexpr (pk::kEpilogueByLength<T, kHeadDim, kPlanned, kTransformScores>) {
        if (ss::longest_tile(g) <= single_prefill_few_tiles_max()) {
          auto* few_tiles_kernel =
              &pk::prefill_kernel<T, kHeadDim, kPaged, kPlanned, kTransformScores, kMasked, false, true>;
          blocks_per_multiprocessor<T, kHeadDim, kPaged, kPlanned, kTransformScores, kMasked, false, true>();
          few_tiles_kernel<<<grid_of(tiles), Policy::kThreads, kSmem, stream>>>(params, 0);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          return;
        }
      }
      kernel<<<grid_of(tiles), Policy::kThreads, kSmem, stream>>>(params, 0);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    // The chunks' rows (O / l in q's dtype) and lse, through the caching allocator.
    auto* split_kernel = &pk::prefill_kernel<T, kHeadDim, kPaged, kPlanned, kTransformScores, kMasked, true>;
    blocks_per_multiprocessor<T, kHeadDim, kPaged, kPlanned, kTransformScores, kMasked, true>();  // smem limit
    const auto opts = at::TensorOptions().device(at::kCUDA, c10::cuda::current_device());
    const int64_t partial_rows = int64_t{split.splits} * params.qo_len * params.num_qo_heads;
    const at::Tensor split_o = at::empty({partial_rows, kHeadDim}, opts.dtype(scalar_type_of<T>()));
    const at::Tensor split_lse = at::empty({partial_rows}, opts.dtype(at::kFloat));
    pk::PrefillParams p = params;
    p.split_o = split_o.data_ptr();
    p.partial_lse = split_lse.data_ptr<float>();
    p.kv_splits = split.splits;
    p.kv_chunk_tiles = split.chunk_tiles;
    split_kernel<<<grid_of(tiles * split.splits), Policy::kThreads, kSmem, stream>>>(p, 0);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t merge_threads = int64_t{params.qo_len} * params.num_qo_heads * (kHeadDim / 8);
    const int64_t merge_blocks = (merge_threads + pk::kMergeThreads - 1) / pk::kMergeThreads;
    const int merge_grid = static_cast<int>(std::min<int64_t>(gpu_binding::num_multiprocessors() * 8, merge_blocks));
    pk::merge_split_tiles_kernel<T, kHeadDim><<<merge_grid, pk::kMergeThreads, 0, stream>>>(
        p, Policy::kTileRows, Policy::kKvTile, merge_grid);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const int grid = planned_grid_blocks<T, kHeadDim, kPaged, kTransformScores, kMasked>();
  gpu_binding::launch_kernel(kernel, grid, Policy::kThreads, kSmem, stream, pdl, params, grid);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (qo_tokens == 0) return;
  const int merge_grid = gpu_binding::num_multiprocessors() * 4;
  gpu_binding::launch_kernel(&pk::merge_partials_kernel<T, kHeadDim>, merge_grid, pk::kMergeThreads, 0, stream, pdl,
                             params, static_cast<int>(qo_tokens), merge_grid);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The instantiation a launch takes, as compile-time flags passed to f: scores with a soft cap
// (or a non-positive scale) take the kernels that transform every score; batches with custom
// masks the masked instantiation where the platform has one (AMD). The launch and plan()'s grid
// query (prefill_grid_blocks) both choose through this, so their grids agree.
template <int kHeadDim, bool kPlanned, typename F>
auto with_variant(bool transform, bool masked, F&& f) {
  using Yes = std::true_type;
  using No = std::false_type;
  if constexpr (pk::PrefillPolicy<kHeadDim, kPlanned>::kHasMaskedVariant) {
    if (masked) return transform ? f(Yes{}, Yes{}) : f(No{}, Yes{});
  }
  return transform ? f(Yes{}, No{}) : f(No{}, No{});
}

bool transforms_scores(const pk::PrefillParams& p) { return p.cap_log2e > 0.0f || !(p.logit_scale > 0.0f); }

template <typename T, int kHeadDim, bool kPaged, bool kPlanned>
void launch(const pk::PrefillParams& params, int64_t qo_tokens, bool pdl) {
  with_variant<kHeadDim, kPlanned>(transforms_scores(params), params.custom_mask != nullptr,
                                   [&](auto transform, auto masked) {
                                     launch_scores<T, kHeadDim, kPaged, kPlanned, decltype(transform)::value,
                                                   decltype(masked)::value>(params, qo_tokens, pdl);
                                   });
}

// pdl: the batch launches as programmatic dependent launches (single requests never take it).
template <bool kPaged, bool kPlanned>
void dispatch(const char* op, at::ScalarType dtype, int64_t head_dim,
              const pk::PrefillParams& params, int64_t qo_tokens, bool pdl = false) {
#define TFO_PREFILL_CASE(T, D)                                     \
  if (dtype == scalar_type_of<T>() && head_dim == D) {             \
    return launch<T, D, kPaged, kPlanned>(params, qo_tokens, pdl); \
  }
  TFO_PREFILL_FOR_EACH_CONFIG(TFO_PREFILL_CASE)
#undef TFO_PREFILL_CASE
  const std::string served = served_configs();
  TORCH_CHECK(false, op, ": head_dim ", head_dim, " with dtype ", c10::toString(dtype),
              " is not instantiated in this build (setup.py knobs TFO_HEAD_DIMS / TFO_DTYPES; served "
              "dtype/head_dim: ", served, ")");
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

void check_q(const at::Tensor& q, const char* op) {
  check_cuda(q, "q", op);
  TORCH_CHECK(q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16, op,
              ": q must be float16 or bfloat16, got ", q.scalar_type());
  TORCH_CHECK(q.dim() == 3, op, ": q must be [qo_tokens, num_qo_heads, head_dim], got ",
              q.sizes());
  TORCH_CHECK(q.stride(2) == 1 && q.stride(0) % 8 == 0 && q.stride(1) % 8 == 0 &&
                  aligned16(q.data_ptr()),
              op, ": q must be contiguous in head_dim with 16-byte aligned rows");
}

void check_kv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const char* op) {
  check_cuda(k, "k", op);
  check_cuda(v, "v", op);
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), op,
              ": the GPU kernels take k and v of q's dtype (", q.scalar_type(), "), got ",
              k.scalar_type(), " and ", v.scalar_type(),
              " (float8 KV caches are served on the CPU only)");
  TORCH_CHECK(k.sizes() == v.sizes(), op, ": k and v shapes differ: ", k.sizes(), " vs ",
              v.sizes());
  for (const at::Tensor* t : {&k, &v}) {
    TORCH_CHECK(t->stride(-1) == 1 && aligned16(t->data_ptr()), op,
                ": k and v must be contiguous in head_dim and 16-byte aligned");
    for (int64_t d = 0; d + 1 < t->dim(); ++d) {
      TORCH_CHECK(t->stride(d) % 8 == 0, op, ": k and v strides must be multiples of 8 elements");
    }
  }
  TORCH_CHECK(k.size(-1) == q.size(2), op, ": head_dim of q (", q.size(2), ") and k/v (",
              k.size(-1), ") differ");
}

void check_int32(const at::Tensor& t, const char* name, const char* op) {
  check_cuda(t, name, op);
  TORCH_CHECK(t.scalar_type() == at::kInt && t.dim() == 1 && t.is_contiguous(), op, ": ", name,
              " must be a contiguous 1-D int32 tensor");
}

void set_heads(pk::PrefillParams& p, int64_t num_qo_heads, int64_t num_kv_heads, const char* op) {
  TORCH_CHECK(num_kv_heads > 0 && num_qo_heads % num_kv_heads == 0, op, ": num_qo_heads (",
              num_qo_heads, ") must be a multiple of num_kv_heads (", num_kv_heads, ")");
  p.num_kv_heads = static_cast<int>(num_kv_heads);
  p.group_div = tfo::kernels::make_page_divisor(static_cast<int32_t>(num_qo_heads / num_kv_heads));
}

void set_options(pk::PrefillParams& p, bool causal, int64_t window_left, double sm_scale,
                 double logits_soft_cap, double k_scale, double v_scale, const char* op) {
  TORCH_CHECK(window_left >= -1, op, ": window_left must be -1 (off) or >= 0, got ", window_left);
  TORCH_CHECK(logits_soft_cap >= 0.0, op, ": logits_soft_cap must be >= 0, got ",
              logits_soft_cap);
  p.causal = causal;
  p.window_left = static_cast<int>(window_left);
  // K and V scales are linear: k_scale folds into the logits, v_scale into the output.
  constexpr double kLog2e = 1.4426950408889634;
  const double scale = sm_scale * k_scale;
  p.logit_scale = static_cast<float>(logits_soft_cap > 0.0 ? scale / logits_soft_cap : scale * kLog2e);
  p.cap_log2e = static_cast<float>(logits_soft_cap * kLog2e);
  p.o_scale = static_cast<float>(v_scale);
}

constexpr int64_t kMaxStride = 0x7fffffff;

// The kernels address K and V with one set of strides; when they differ, both are made
// contiguous (through the caching allocator). The returned tensors back p.k and p.v.
struct KvTensors {
  at::Tensor k, v;
};

KvTensors set_kv(pk::PrefillParams& p, const at::Tensor& k, const at::Tensor& v, int page_dim,
                 int token_dim, int head_dim, const char* op) {
  KvTensors kv{k, v};
  if (k.strides() != v.strides()) {
    kv.k = k.contiguous();
    kv.v = v.contiguous();
  }
  TORCH_CHECK(kv.k.stride(token_dim) <= kMaxStride && kv.k.stride(head_dim) <= kMaxStride &&
                  (page_dim < 0 || kv.k.stride(page_dim) <= kMaxStride),
              op, ": k/v strides must be below 2^31 elements");
  p.k = kv.k.data_ptr();
  p.v = kv.v.data_ptr();
  p.kv_stride_page = page_dim >= 0 ? static_cast<int>(kv.k.stride(page_dim)) : 0;
  p.kv_stride_token = static_cast<int>(kv.k.stride(token_dim));
  p.kv_stride_head = static_cast<int>(kv.k.stride(head_dim));
  return kv;
}

void set_query(pk::PrefillParams& p, const at::Tensor& q) {
  TORCH_CHECK(q.stride(0) <= kMaxStride && q.stride(1) <= kMaxStride,
              "q strides must be below 2^31 elements");
  p.q = q.data_ptr();
  p.q_stride_token = static_cast<int>(q.stride(0));
  p.q_stride_head = static_cast<int>(q.stride(1));
  p.num_qo_heads = static_cast<int>(q.size(1));
}

// The kernels write o of q's dtype with 16-byte stores; any other o goes through a temporary.
struct OutputTarget {
  at::Tensor o, staged;
};

OutputTarget set_outputs(pk::PrefillParams& p, const at::Tensor& q, at::Tensor& o,
                         const std::optional<at::Tensor>& lse, const char* op) {
  check_cuda(o, "o", op);
  TORCH_CHECK(o.sizes() == q.sizes(), op, ": o must have q's shape ", q.sizes(), ", got ",
              o.sizes());
  TORCH_CHECK(o.scalar_type() == at::kHalf || o.scalar_type() == at::kBFloat16, op,
              ": o must be float16 or bfloat16, got ", o.scalar_type());
  OutputTarget target{o, at::Tensor()};
  const bool direct = o.scalar_type() == q.scalar_type() && o.stride(2) == 1 &&
                      o.stride(0) % 8 == 0 && o.stride(1) % 8 == 0 && aligned16(o.data_ptr());
  at::Tensor written = o;
  if (!direct) {
    target.staged = at::empty(q.sizes(), q.options());
    written = target.staged;
  }
  TORCH_CHECK(written.stride(0) <= kMaxStride && written.stride(1) <= kMaxStride, op,
              ": o strides must be below 2^31 elements");
  p.o = written.data_ptr();
  p.o_stride_token = static_cast<int>(written.stride(0));
  p.o_stride_head = static_cast<int>(written.stride(1));
  if (lse.has_value()) {
    check_cuda(*lse, "lse", op);
    TORCH_CHECK(lse->scalar_type() == at::kFloat && lse->is_contiguous() && lse->dim() == 2 &&
                    lse->size(0) == q.size(0) && lse->size(1) == q.size(1),
                op, ": lse must be contiguous float32 [", q.size(0), ", ", q.size(1), "]");
    p.lse = lse->data_ptr<float>();
  }
  return target;
}

void finish_outputs(OutputTarget& target) {
  if (target.staged.defined()) target.o.copy_(target.staged);
}

void set_custom_mask(pk::PrefillParams& p, const std::optional<at::Tensor>& packed_custom_mask,
                     const std::optional<at::Tensor>& mask_indptr, bool batch, const char* op) {
  if (!packed_custom_mask.has_value()) return;
  check_cuda(*packed_custom_mask, "packed_custom_mask", op);
  TORCH_CHECK(packed_custom_mask->scalar_type() == at::kByte && packed_custom_mask->is_contiguous(),
              op, ": packed_custom_mask must be contiguous uint8");
  p.custom_mask = packed_custom_mask->data_ptr<uint8_t>();
  if (batch) {
    TORCH_CHECK(mask_indptr.has_value(), op, ": packed_custom_mask needs mask_indptr");
    check_int32(*mask_indptr, "mask_indptr", op);
    p.mask_indptr = mask_indptr->data_ptr<int32_t>();
  }
}

void set_plan(pk::PrefillParams& p, const at::Tensor& plan_info, at::Tensor& partial_o,
              at::Tensor& partial_lse, const char* op) {
  check_int32(plan_info, "plan_info", op);
  TORCH_CHECK(plan_info.numel() >= flashinfer_ops::plan_info::kHeaderSize, op,
              ": plan_info is smaller than its header");
  check_cuda(partial_o, "partial_o", op);
  check_cuda(partial_lse, "partial_lse", op);
  TORCH_CHECK(partial_o.scalar_type() == at::kFloat && partial_o.is_contiguous() &&
                  partial_lse.scalar_type() == at::kFloat && partial_lse.is_contiguous(),
              op, ": partial_o and partial_lse must be contiguous float32");
  p.plan = plan_info.data_ptr<int32_t>();
  p.partial_o = partial_o.data_ptr<float>();
  p.partial_lse = partial_lse.data_ptr<float>();
}

void single_prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& o,
                    const std::optional<at::Tensor>& maybe_lse,
                    const std::optional<at::Tensor>& packed_custom_mask, int64_t kv_layout,
                    bool causal, int64_t window_left, double sm_scale, double logits_soft_cap,
                    double k_scale, double v_scale) {
  const char* op = "single_prefill";
  TORCH_CHECK(kv_layout == kLayoutNHD || kv_layout == kLayoutHND, op,
              ": kv_layout must be 0 (NHD) or 1 (HND), got ", kv_layout);
  check_q(q, op);
  check_kv(q, k, v, op);
  TORCH_CHECK(k.dim() == 3, op, ": k and v must be 3-D");
  const c10::cuda::CUDAGuard guard(q.device());
  const int tok = kv_layout == kLayoutNHD ? 0 : 1, head = 1 - tok;
  pk::PrefillParams p;
  set_query(p, q);
  set_heads(p, q.size(1), k.size(head), op);
  const KvTensors kv = set_kv(p, k, v, -1, tok, head, op);
  p.qo_len = static_cast<int>(q.size(0));
  p.kv_len = static_cast<int>(k.size(tok));
  set_options(p, causal, window_left, sm_scale, logits_soft_cap, k_scale, v_scale, op);
  if (packed_custom_mask.has_value()) {
    TORCH_CHECK(packed_custom_mask->numel() >= (q.size(0) * k.size(tok) + 7) / 8, op,
                ": packed_custom_mask holds ", packed_custom_mask->numel(),
                " bytes, needs ceil(qo_len * kv_len / 8)");
  }
  set_custom_mask(p, packed_custom_mask, std::nullopt, false, op);
  OutputTarget target = set_outputs(p, q, o, maybe_lse, op);
  dispatch<false, false>(op, q.scalar_type(), q.size(2), p, q.size(0));
  finish_outputs(target);
}

void batch_prefill_paged_run(const at::Tensor& q, const at::Tensor& paged_k,
                             const at::Tensor& paged_v, const at::Tensor& qo_indptr,
                             const at::Tensor& kv_indptr, const at::Tensor& kv_indices,
                             const at::Tensor& kv_last_page_len, const at::Tensor& plan_info,
                             at::Tensor& partial_o, at::Tensor& partial_lse, at::Tensor& o,
                             const std::optional<at::Tensor>& maybe_lse,
                             const std::optional<at::Tensor>& packed_custom_mask,
                             const std::optional<at::Tensor>& mask_indptr, int64_t kv_layout,
                             bool causal, int64_t window_left, double sm_scale,
                             double logits_soft_cap, double k_scale, double v_scale, bool enable_pdl) {
  const char* op = "batch_prefill_paged_run";
  TORCH_CHECK(kv_layout == kLayoutNHD || kv_layout == kLayoutHND, op,
              ": kv_layout must be 0 (NHD) or 1 (HND), got ", kv_layout);
  check_q(q, op);
  check_kv(q, paged_k, paged_v, op);
  TORCH_CHECK(paged_k.dim() == 4, op, ": paged k/v caches must be 4-D");
  const c10::cuda::CUDAGuard guard(q.device());
  check_pdl(enable_pdl, op);
  check_int32(qo_indptr, "qo_indptr", op);
  check_int32(kv_indptr, "kv_indptr", op);
  check_int32(kv_indices, "kv_indices", op);
  check_int32(kv_last_page_len, "kv_last_page_len", op);
  const int64_t batch = kv_last_page_len.numel();
  TORCH_CHECK(qo_indptr.numel() == batch + 1 && kv_indptr.numel() == batch + 1, op,
              ": qo_indptr and kv_indptr must have batch_size + 1 = ", batch + 1, " entries");
  const int tok = kv_layout == kLayoutNHD ? 1 : 2, head = kv_layout == kLayoutNHD ? 2 : 1;
  pk::PrefillParams p;
  set_query(p, q);
  set_heads(p, q.size(1), paged_k.size(head), op);
  const KvTensors kv = set_kv(p, paged_k, paged_v, 0, tok, head, op);
  TORCH_CHECK(paged_k.size(tok) > 0, op, ": page_size must be positive");
  p.page_div = tfo::kernels::make_page_divisor(static_cast<int32_t>(paged_k.size(tok)));
  p.qo_indptr = qo_indptr.data_ptr<int32_t>();
  p.kv_indptr = kv_indptr.data_ptr<int32_t>();
  p.kv_indices = kv_indices.data_ptr<int32_t>();
  p.kv_last_page_len = kv_last_page_len.data_ptr<int32_t>();
  set_plan(p, plan_info, partial_o, partial_lse, op);
  set_options(p, causal, window_left, sm_scale, logits_soft_cap, k_scale, v_scale, op);
  set_custom_mask(p, packed_custom_mask, mask_indptr, true, op);
  OutputTarget target = set_outputs(p, q, o, maybe_lse, op);
  dispatch<true, true>(op, q.scalar_type(), q.size(2), p, q.size(0), enable_pdl);
  finish_outputs(target);
}

void batch_prefill_ragged_run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& qo_indptr, const at::Tensor& kv_indptr,
                              const at::Tensor& plan_info, at::Tensor& partial_o,
                              at::Tensor& partial_lse, at::Tensor& o,
                              const std::optional<at::Tensor>& maybe_lse,
                              const std::optional<at::Tensor>& packed_custom_mask,
                              const std::optional<at::Tensor>& mask_indptr, int64_t kv_layout,
                              bool causal, int64_t window_left, double sm_scale,
                              double logits_soft_cap, double k_scale, double v_scale, bool enable_pdl) {
  const char* op = "batch_prefill_ragged_run";
  TORCH_CHECK(kv_layout == kLayoutNHD || kv_layout == kLayoutHND, op,
              ": kv_layout must be 0 (NHD) or 1 (HND), got ", kv_layout);
  check_q(q, op);
  check_kv(q, k, v, op);
  TORCH_CHECK(k.dim() == 3, op, ": k and v must be 3-D");
  const c10::cuda::CUDAGuard guard(q.device());
  check_pdl(enable_pdl, op);
  check_int32(qo_indptr, "qo_indptr", op);
  check_int32(kv_indptr, "kv_indptr", op);
  TORCH_CHECK(qo_indptr.numel() >= 1 && kv_indptr.numel() == qo_indptr.numel(), op,
              ": qo_indptr and kv_indptr must both have batch_size + 1 entries");
  const int tok = kv_layout == kLayoutNHD ? 0 : 1, head = 1 - tok;
  pk::PrefillParams p;
  set_query(p, q);
  set_heads(p, q.size(1), k.size(head), op);
  const KvTensors kv = set_kv(p, k, v, -1, tok, head, op);
  p.qo_indptr = qo_indptr.data_ptr<int32_t>();
  p.kv_indptr = kv_indptr.data_ptr<int32_t>();
  set_plan(p, plan_info, partial_o, partial_lse, op);
  set_options(p, causal, window_left, sm_scale, logits_soft_cap, k_scale, v_scale, op);
  set_custom_mask(p, packed_custom_mask, mask_indptr, true, op);
  OutputTarget target = set_outputs(p, q, o, maybe_lse, op);
  dispatch<false, true>(op, q.scalar_type(), q.size(2), p, q.size(0), enable_pdl);
  finish_outputs(target);
}

}  // namespace

namespace gpu_binding {

// The persistent grid of batch prefill launches on the current device for (dtype, head_dim,
// paged, scores transformed: a soft cap or a non-positive scale, custom masks), for plan()'s
// work lists; 0 when this build holds no such instantiation. No device work.
template <typename T, int D>
int64_t grid_for(bool paged, bool transform, bool masked) {
  return with_variant<D, true>(transform, masked, [&](auto tr, auto m) -> int64_t {
    constexpr bool kTransform = decltype(tr)::value, kMasked = decltype(m)::value;
    return paged ? planned_grid_blocks<T, D, true, kTransform, kMasked>()
                 : planned_grid_blocks<T, D, false, kTransform, kMasked>();
  });
}

int64_t prefill_grid_blocks(const std::string& dtype, int64_t head_dim, bool paged, bool transform_scores,
                            bool masked) {
  const at::ScalarType type = dtype == "float16" ? at::kHalf : dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
#define TFO_PREFILL_GRID(T, D) \
  if (type == scalar_type_of<T>() && head_dim == D) return grid_for<T, D>(paged, transform_scores, masked);
  TFO_PREFILL_FOR_EACH_CONFIG(TFO_PREFILL_GRID)
#undef TFO_PREFILL_GRID
  return 0;
}

}  // namespace gpu_binding

TORCH_LIBRARY_IMPL(flashinfer, CUDA, m) {
  m.impl("single_prefill", &single_prefill);
  m.impl("batch_prefill_paged_run", &batch_prefill_paged_run);
  m.impl("batch_prefill_ragged_run", &batch_prefill_ragged_run);
}

}  // namespace flashinfer_ops
