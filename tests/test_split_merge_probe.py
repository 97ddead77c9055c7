"""benchmarks/split_merge_probe.cu on the host: it compiles for sm_90a with nvcc where present, and
its merging schemes keep the memory operations that make them what they are (the acquire-release
count, the cluster barrier, the flagged words' relaxed 64-bit stores and polls, the cooperative
launch). The GPU runs it; RESULTS.md has what it measured."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROBE = Path(__file__).resolve().parents[1] / "benchmarks" / "split_merge_probe.cu"


def _entries(ptx):
    """Each kernel's PTX body by its mangled name."""
    parts = re.split(r"\.entry\s+(\S+)\(", ptx)
    return {name: body for name, body in zip(parts[1::2], parts[2::2])}


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_probe_compiles_and_each_scheme_keeps_its_memory_operations(tmp_path):
    ptx = tmp_path / "split_merge_probe.ptx"
    subprocess.run(["nvcc", "-ptx", "-O3", "-std=c++17", "-arch=sm_90a", str(PROBE), "-o", str(ptx)], check=True,
                   capture_output=True, timeout=300)
    entries = _entries(ptx.read_text())

    def body(kernel):
        found = [b for name, b in entries.items() if kernel in name]
        assert len(found) == 1, f"one kernel named {kernel}"
        return found[0]

    assert "atom.add.acq_rel.gpu" in body("last_arrival")
    assert "barrier.cluster" in body("cluster_merge")
    assert "mapa" in body("cluster_merge")
    words = body("flagged_words")
    assert "st.relaxed.gpu.global.u64" in words and "ld.volatile.global.u64" in words
    assert "griddepcontrol.wait" in words and "griddepcontrol.launch_dependents" in words
    # The poll issues its 16 loads before it tests any (one round trip a poll).
    loop = words[words.index("ld.volatile.global.u64"):]
    first_test = loop.index("setp")
    assert loop[:first_test].count("ld.volatile.global.u64") == 16


def test_probe_launches_the_flagged_words_cooperatively():
    source = PROBE.read_text()
    assert "cudaLaunchAttributeCooperative" in source
    assert "cudaLaunchAttributeProgrammaticStreamSerialization" in source
