// Kernel variants under evaluation: changes whose correctness is proved (the emulated tiers run
// them) but whose speed has not yet been measured against the default kernels on a GPU. Each is
// a build-time switch, off by default, so that one commit builds both sides of an A/B
// (setup.py's TFO_KERNEL_VARIANTS names them; benchmarks/ab_variant.py builds the two trees,
// runs the variant's GPU tests and times them against each other).
// A variant that wins becomes the default and loses its switch; one that loses is deleted.
// docs/kernel_notes.md has each one's prediction. setup.py reads the names below from this file.
#pragma once

namespace tfo::kernels {

// TFO_VARIANT_PREFILL_BF16_HALF_ROW_SUMS: the bf16 single-request prefill kernels (unsplit, no
// score transform; NVIDIA) sum P's rows on the tensor cores as the fp16 ones do, through an fp16
// copy of each P block made for the sum alone (the bf16 operand's 8-bit mantissa moves lse past
// its tolerance).
#ifdef TFO_VARIANT_PREFILL_BF16_HALF_ROW_SUMS
inline constexpr bool kVariantPrefillBf16HalfRowSums = true;
#else
inline constexpr bool kVariantPrefillBf16HalfRowSums = false;
#endif

// TFO_VARIANT_PREFILL_PLANNED_T_STAGE: the planned ragged prefill kernels (NVIDIA, head_dim <=
// 128, no score transform, no mask instantiation) stage the output of a unit that is not a
// split's part as T in the Q tile, through single prefill's fragment store and row copy, rather
// than as float32 over the whole shared memory.
#ifdef TFO_VARIANT_PREFILL_PLANNED_T_STAGE
inline constexpr bool kVariantPrefillPlannedTStage = true;
#else
inline constexpr bool kVariantPrefillPlannedTStage = false;
#endif

}  // namespace tfo::kernels
