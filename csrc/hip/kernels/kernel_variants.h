// Kernel variants under evaluation: changes whose correctness is proved (the emulated tiers run
// them) but whose speed has not yet been measured against the default kernels on a GPU. Each is
// a build-time switch, off by default, so that one commit builds both sides of an A/B
// (setup.py's TFO_KERNEL_VARIANTS names them; benchmarks/ab_variant.py builds the two trees,
// runs the variant's GPU tests and times them against each other).
// A variant that wins becomes the default and loses its switch; one that loses is deleted.
// docs/kernel_notes.md has each one's prediction. setup.py reads the names below from this file.
#pragma once

namespace tfo::kernels {

// None is under evaluation at present. A variant is written as
//
//   // TFO_VARIANT_<NAME>: what it changes, in which kernels.
//   #ifdef TFO_VARIANT_<NAME>
//   inline constexpr bool kVariant<Name> = true;
//   #else
//   inline constexpr bool kVariant<Name> = false;
//   #endif
//
// read by the kernels it changes (which include this header), and reported by
// csrc/cpu/build_info.cpp's kernel_variants_built().

}  // namespace tfo::kernels
