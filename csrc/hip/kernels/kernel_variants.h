// Kernel variants under evaluation: changes whose correctness is proved (the emulated tiers run
// them) but whose speed has not yet been measured against the default kernels on a GPU. Each is
// a build-time switch, off by default, so that one commit builds both sides of an A/B
// (setup.py's TFO_KERNEL_VARIANTS names them; benchmarks/ab_variant.py builds the two trees,
// runs the variant's GPU tests and times them against each other).
// A variant that wins becomes the default and loses its switch; one that loses is deleted.
// docs/kernel_notes.md has each one's prediction. tools/kernel_variants.py reads the names below
// from this file (for setup.py, ab_variant.py and the emulated tier). A name begins with the
// kernel family it changes (PREFILL_, DECODE_): the emulated tier runs that family's cases on a
// build with it on.
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

}  // namespace tfo::kernels
