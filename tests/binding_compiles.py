"""The binding check's compiles (tools/binding_check.py), run once per pytest process and shared
by its two users: every binding as the extension builds it, linked together, and its ROCm
branches (test_binding_check), and the decode bindings with TFO_TIMELINE, the profiling build
(test_decode_timeline). One pool takes both, so the second set keeps the cores busy through the
first's tail."""
import functools

try:
    from . import tool_modules
except ImportError:
    import tool_modules

bc = tool_modules.load("binding_check")

TIMELINE_BINDINGS = ("csrc/hip/bindings/decode.cu", "csrc/hip/bindings/decode_mma.cu")


@functools.cache
def compiled():
    """({source: (ok, errors)} of the bindings, [(ok, errors)] of their link,
    {source: (ok, errors)} of the timeline bindings, {source: (ok, errors)} of the bindings'
    ROCm branches (bc.ROCM_BRANCHES)). Needs nvcc (bc.find_nvcc())."""
    link = []
    variants = tuple((source, ("TFO_TIMELINE",)) for source in TIMELINE_BINDINGS)
    variants += tuple((source, (bc.ROCM_BRANCHES,)) for source in bc.BINDINGS)
    results = bc.run(bc.BINDINGS, link=link, variants=variants)
    n, t = len(bc.BINDINGS), len(TIMELINE_BINDINGS)
    plain, timeline, rocm = results[:n], results[n:n + t], results[n + t:]
    return ({s: (ok, errors) for s, ok, errors, _ in plain}, link,
            {s: (ok, errors) for s, ok, errors, _ in timeline},
            {s: (ok, errors) for s, ok, errors, _ in rocm})
