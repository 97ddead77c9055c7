// The matrix-core decode family (use_tensor_cores=True), compiled on its own so that the two
// decode families build in parallel. The operators are registered in decode.cu.
#include "decode_launch.h"
#include "kernels/decode/decode_mma.cu"

namespace flashinfer_ops {
namespace gpu_binding {

bool launch_decode_mma(tfo::kernels::DecodeParams& p, at::ScalarType q_dtype, KvKind kv_kind,
                       int head_dim, cudaStream_t stream, bool grid_only) {
  using namespace tfo::kernels;
  bool launched = false;
  with_q_type(q_dtype, [&](auto t_tag) {
    using T = typename decltype(t_tag)::type;
    with_head_dim(head_dim, [&](auto d_const) {
      constexpr int D = decltype(d_const)::value;
      with_kv_storage<T>(kv_kind, [&](auto kv_tag) {
        using KV = typename decltype(kv_tag)::type;
        constexpr int kThreads = kMmaDecodeThreads<D>;
        constexpr int kSmem = kMmaDecodeSmemBytes<T, KV, D>;
        auto* kernel = &decode_mma_kernel<T, KV, D>;
        static const int per_sm = [&] {
          C10_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                              cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
          return resident_blocks_per_sm(kernel, kThreads, kSmem);
        }();
        p.num_blocks = num_multiprocessors() * per_sm;
        if (!grid_only) kernel<<<p.num_blocks, kThreads, kSmem, stream>>>(p);
        launched = true;
      });
    });
  });
  return launched;
}

}  // namespace gpu_binding
}  // namespace flashinfer_ops
