"""Fake (meta) implementations of every torch.ops.flashinfer operator.

One fake per operator, mirroring csrc/registry.cpp. They give output shapes, dtypes
and strides without touching data, so the operators trace under torch.compile.
"""
from . import attention, cascade, page, planner  # noqa: F401
