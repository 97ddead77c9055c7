"""Parameter matrices of the emulated tiers' largest tests.

Emulated kernels run a host thread per lane, so a case costs seconds, and crossing every axis of
the largest tests in full would take the default test command past its time budget. By default
the last two axes of such a matrix are therefore crossed by rotation: for each combination of the
other axes (a case), every value of the longer of the two runs once, paired with a value of the
shorter one that turns from case to case. Each case still meets every value of both axes, and,
given as many cases as the shorter axis has values, every pair of the two axes runs in some case.
TFO_EMULATED_FULL=1 crosses them in full.
"""
import itertools
import os

import pytest

FULL = os.environ.get("TFO_EMULATED_FULL") == "1"


def axis(values, ids=None):
    """An axis: its values, each with the id it takes in test names (str(value) unless given)."""
    values = list(values)
    ids = [str(v) for v in values] if ids is None else list(ids)
    assert len(ids) == len(values), "an id per value"
    return list(zip(ids, values))


def _turned_pairs(k, first, second):
    """The (first, second) entries case `k` runs: every value of the longer axis once, each with the
    shorter axis's value k places on."""
    if len(first) >= len(second):
        return [(x, second[(k + i) % len(second)]) for i, x in enumerate(first)]
    return [(first[(k + i) % len(first)], y) for i, y in enumerate(second)]


def matrix(*axes, full=None):
    """pytest.param entries over the axes (each made by axis()), in the axes' order, with ids
    joined by "-" as stacked parametrize decorators name them: the product of every axis when
    full (default: TFO_EMULATED_FULL=1), else the product of all but the last two, each crossed
    with the last two by rotation."""
    *outer, first, second = axes
    full = FULL if full is None else full
    params = []
    for k, case in enumerate(itertools.product(*outer)):
        pairs = itertools.product(first, second) if full else _turned_pairs(k, first, second)
        for x, y in pairs:
            entries = (*case, x, y)
            params.append(pytest.param(*(value for _, value in entries), id="-".join(i for i, _ in entries)))
    return params
