"""The project's tools (tools/<name>.py) for the tests: loaded by path (tools/ is no package), once
per pytest process, as module tfo_<name>, registered in sys.modules (dataclasses look their module
up there)."""
import importlib.util
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load(name):
    module_name = f"tfo_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, TOOLS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]
