"""The emulated tiers' rotated matrices (tests/emulated_matrix.py): what the default test command
drops from the full product, and what it keeps."""
import itertools

from emulated_matrix import axis, matrix

CASES = axis(["a", "b", "c", "d"])
FAMILIES = axis(["simt", "mma"])
MERGE = axis([False, True], ["merge-launch", "in-launch"])
BUILDS = axis(["sm80", "sm90", "sm90-variants"])


def _values(params):
    return [tuple(p.values) for p in params]


def test_full_is_the_product_with_stacked_decorator_ids():
    params = matrix(CASES, FAMILIES, MERGE, BUILDS, full=True)
    assert _values(params) == list(itertools.product("abcd", ["simt", "mma"], [False, True],
                                                     ["sm80", "sm90", "sm90-variants"]))
    assert params[0].id == "a-simt-merge-launch-sm80" and params[-1].id == "d-mma-in-launch-sm90-variants"


def test_rotation_keeps_every_value_per_case_and_every_pair_overall():
    params = _values(matrix(CASES, FAMILIES, MERGE, BUILDS, full=False))
    assert len(params) == 4 * 2 * 3  # the longer axis once per case
    for case, family in itertools.product("abcd", ["simt", "mma"]):
        runs = [(m, b) for c, f, m, b in params if (c, f) == (case, family)]
        assert {b for _, b in runs} == {"sm80", "sm90", "sm90-variants"}
        assert {m for m, _ in runs} == {False, True}
    assert {(m, b) for _, _, m, b in params} == set(itertools.product([False, True], ["sm80", "sm90", "sm90-variants"]))


def test_a_shorter_last_axis_turns_the_same_way():
    params = _values(matrix(CASES, BUILDS, MERGE, full=False))
    for case in "abcd":
        runs = [(b, m) for c, b, m in params if c == case]
        assert sorted(b for b, _ in runs) == ["sm80", "sm90", "sm90-variants"] and {m for _, m in runs} == {False, True}
    assert len(set(params)) == len(params) == 12
