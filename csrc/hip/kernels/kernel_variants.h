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

// TFO_VARIANT_DECODE_SIMT_FOUR_BLOCKS: the CUDA-core decode kernel's 4-row group tile (GQA groups
// of 2-4 heads, FP8 MHA) capped at 128 registers, so four blocks share a multiprocessor instead
// of three (NVIDIA; AMD ignores the cap): its rows run 3 deep instead of 4 and are held as page
// id and slot (two 32-bit registers) instead of two 64-bit offsets, which keeps the cap without
// spills. Each block has 3/4 of the bytes in flight, the multiprocessor the same.
#ifdef TFO_VARIANT_DECODE_SIMT_FOUR_BLOCKS
inline constexpr bool kVariantDecodeSimtFourBlocks = true;
#else
inline constexpr bool kVariantDecodeSimtFourBlocks = false;
#endif

}  // namespace tfo::kernels
