// The prefill kernels, instantiated from the one list in prefill_configs.h (the torch bindings
// in csrc/hip/bindings/prefill.cu launch the same list). Compiled on its own by
// tools/compile_check.py for gfx942/gfx950 and sm_80/sm_90a.
#include "prefill_configs.h"
#include "prefill_merge.h"

namespace tfo::kernels::prefill {

// The planned kernels' masked instantiations, where the platform has them (AMD).
template <typename T, int D>
void instantiate_masked_variants() {
  if constexpr (PrefillPolicy<D, true>::kHasMaskedVariant) {
    (void)&prefill_kernel<T, D, false, true, false, true>;
    (void)&prefill_kernel<T, D, true, true, false, true>;
    (void)&prefill_kernel<T, D, false, true, true, true>;
    (void)&prefill_kernel<T, D, true, true, true, true>;
  }
}

// The single-request kernels' epilogue for launches of few K/V tiles, where the policy has two.
template <typename T, int D>
void instantiate_few_tiles_variants() {
  if constexpr (kEpilogueByLength<T, D, false, false>) {
    (void)&prefill_kernel<T, D, false, false, false, false, false, true>;
  }
}

#define TFO_PREFILL_INSTANTIATE_SCORES(T, D, X)                                                    \
  template TFO_GLOBAL void prefill_kernel<T, D, false, false, X>(const PrefillParams, int);        \
  template TFO_GLOBAL void prefill_kernel<T, D, false, false, X, false, true>(const PrefillParams, int); \
  template TFO_GLOBAL void prefill_kernel<T, D, false, true, X>(const PrefillParams, int);  \
  template TFO_GLOBAL void prefill_kernel<T, D, true, true, X>(const PrefillParams, int);
#define TFO_PREFILL_INSTANTIATE(T, D)          \
  TFO_PREFILL_INSTANTIATE_SCORES(T, D, false) \
  TFO_PREFILL_INSTANTIATE_SCORES(T, D, true)  \
  template TFO_GLOBAL void merge_partials_kernel<T, D>(const PrefillParams, int, int); \
  template TFO_GLOBAL void merge_split_tiles_kernel<T, D>(const PrefillParams, int, int, int); \
  template void instantiate_masked_variants<T, D>(); \
  template void instantiate_few_tiles_variants<T, D>();

TFO_PREFILL_FOR_EACH_CONFIG(TFO_PREFILL_INSTANTIATE)

#undef TFO_PREFILL_INSTANTIATE
#undef TFO_PREFILL_INSTANTIATE_SCORES

}  // namespace tfo::kernels::prefill
