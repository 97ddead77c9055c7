// Kernel variants under evaluation: changes whose correctness is proved (the emulated tiers run
// them) but whose speed has not yet been measured against the default kernels on a GPU. Each is
// a build-time switch, off by default, so that one commit builds both sides of an A/B
// (setup.py's TFO_KERNEL_VARIANTS names them; benchmarks/ab_variant.py builds the two trees,
// runs the variant's GPU tests and times them against each other).
// A variant that wins becomes the default and loses its switch; one that loses is deleted.
// docs/kernel_notes.md has each one's prediction. tools/kernel_variants.py reads the names below
// from this file (for setup.py, ab_variant.py and the emulated tier).
#pragma once

namespace tfo::kernels {

// TFO_VARIANT_PREFILL_PLANNED_T_STAGE_D64: the planned ragged kernels at head_dim 64 (NVIDIA, no
// score transform, no mask instantiation) stage a unit that is not a split's part as T in the Q
// tile, as they do at head_dim 128 by default (measured there, not yet at 64).
#ifdef TFO_VARIANT_PREFILL_PLANNED_T_STAGE_D64
inline constexpr bool kVariantPrefillPlannedTStageD64 = true;
#else
inline constexpr bool kVariantPrefillPlannedTStageD64 = false;
#endif

// TFO_VARIANT_DECODE_MMA_HEAD_COLUMNS: the tensor-core decode on FP8 caches with GQA groups of at
// most 8 (NVIDIA, the 4-warp shape) computes its products transposed, the query heads as the
// columns of 16 x 8 products (decode_mma.cu), so it holds no padding rows of a 16-row tile.
#ifdef TFO_VARIANT_DECODE_MMA_HEAD_COLUMNS
inline constexpr bool kVariantDecodeMmaHeadColumns = true;
#else
inline constexpr bool kVariantDecodeMmaHeadColumns = false;
#endif

}  // namespace tfo::kernels
