"""The package imports anywhere; it registers ComfyUI nodes only when ComfyUI is importable."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def import_pack_in_fresh_interpreter() -> str:
    """Import the repository as a package, the way ComfyUI does (by path), with no ComfyUI on sys.path."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('xdyna_pack', {str(REPO / '__init__.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['xdyna_pack'] = module\n"
        "spec.loader.exec_module(module)\n"
        "print(module.WEB_DIRECTORY, hasattr(module, 'comfy_entrypoint'), 'comfy' in sys.modules)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/", check=True)
    return out.stdout.strip()


def test_imports_without_comfyui_and_registers_nothing():
    assert import_pack_in_fresh_interpreter() == "./web False False"


def test_core_never_imports_comfy():
    """The layering of DESIGN.md: nodes → xdyna_core, and xdyna_core is plain torch."""
    for path in (REPO / "xdyna_core").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            for name in names:
                root = name.split(".")[0]
                assert root not in {"comfy", "comfy_api", "comfy_execution", "folder_paths", "nodes"}, (path, name)


def test_no_print_in_the_pack():
    for folder in ("xdyna_core", "nodes"):
        for path in (REPO / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"]
            assert not calls, f"{path} calls print(); use logging.getLogger('xdyna')"


def test_pyproject_has_registry_metadata():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    comfy = meta["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon", "requires-comfyui"):
        assert key in comfy
    assert meta["project"]["name"] == "comfyui-xdyna"
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License")
