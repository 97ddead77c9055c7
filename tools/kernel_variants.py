"""The kernel variants under evaluation (csrc/hip/kernels/kernel_variants.h): their names, read
from the header's switches (`#ifdef TFO_VARIANT_<NAME>`), and the define that turns one on. The
one reader of the header for the build (setup.py's TFO_KERNEL_VARIANTS), the A/B driver
(benchmarks/ab_variant.py) and the NVIDIA emulated tier's variants build. No dependencies: loaded
by path where the package cannot be imported (setup.py)."""
import os
import re

HEADER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc", "hip", "kernels",
                      "kernel_variants.h")


def known():
    """The variants' names, lower case, sorted."""
    with open(HEADER) as header:
        return sorted(name.lower() for name in re.findall(r"^#ifdef TFO_VARIANT_(\w+)$", header.read(), re.M))


def names(text):
    """The variant names of a comma list as given (TFO_KERNEL_VARIANTS, ab_variant.py's
    --variants): stripped, lower case, empty entries dropped; not checked against known()."""
    return [name.strip().lower() for name in text.split(",") if name.strip()]


# The kernel families a variant can change, as its name begins (prefill_..., decode_...): the
# emulated tier runs a family's cases on a variants build only where that family has variants.
FAMILIES = ("prefill", "decode")


def family(name):
    """The kernel family variant `name` changes: its name's first word, one of FAMILIES."""
    first = name.lower().split("_", 1)[0]
    if first not in FAMILIES:
        raise ValueError(f"kernel variant {name!r} must be named after the family it changes "
                         f"({', '.join(f + '_...' for f in FAMILIES)})")
    return first


def define(name):
    """The compiler flag that turns variant `name` on."""
    return f"-DTFO_VARIANT_{name.upper()}"
