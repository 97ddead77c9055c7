"""Docs and examples: the README's backend matrix is the capability table's, and the
release blog's examples run (on the CPU here; on the GPU where there is one)."""
import pathlib
import subprocess
import sys

import pytest

from torch_flashinfer_ops import capabilities

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_matrix_matches_capability_table():
    readme = (ROOT / "README.md").read_text()
    assert capabilities.README_BEGIN in readme and capabilities.README_END in readme
    assert capabilities.readme_with_matrix(readme) == readme, (
        "README's backend matrix is stale: run python -m torch_flashinfer_ops.capabilities --update-readme"
    )


@pytest.mark.parametrize("example", ["blog_single_prefill.py", "blog_batch_paged_prefill.py"])
def test_blog_example_runs(example):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / example)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "relative error vs SDPA" in result.stdout


def test_readme_usage_example_runs():
    readme = (ROOT / "README.md").read_text()
    code = readme.split("```python", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["out"].shape == (4, 32, 128)
    assert not namespace["out"].isnan().any()
