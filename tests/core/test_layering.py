"""The import arrows point one way: nodes → xdyna_comfy → xdyna_core, tools → xdyna_core; nothing shipped imports the tests.

`nodes/` is loaded by ComfyUI as part of the pack; `xdyna_tools/` is the command-line tools (run on their
own, even on machines without ComfyUI). What the node needs from the weights logic lives in `xdyna_core`.
"""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO_ROOT


def imported_modules(path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against its package)."""
    package = path.relative_to(REPO_ROOT).parent.parts
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
    return names


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        # nodes are schemas and calls: everything that touches ComfyUI's internals is in xdyna_comfy
        ("nodes", ("xdyna_tools", "tests", "comfy", "folder_paths", "latent_preview", "comfy_extras", "execution")),
        ("xdyna_comfy", ("nodes", "xdyna_tools", "tests", "comfy_api")),
        ("xdyna_core", ("xdyna_tools", "nodes", "tests", "comfy", "comfy_api", "folder_paths")),
        ("xdyna_tools", ("nodes", "tests", "comfy", "comfy_api")),
    ],
)
def test_imports_point_one_way(folder, forbidden):
    offenders = []
    for path in sorted((REPO_ROOT / folder).rglob("*.py")):
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top in forbidden:
                offenders.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert offenders == []
