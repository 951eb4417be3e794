"""The project's source tree as modules: which file is which module, and what each one imports.

Shared by the layering test (tests/test_packaging.py) and the structure test (tests/test_structure.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# source folder -> the dotted name it installs as (tools/ is not installed; it runs as `python -m tools.X`)
PACKAGES = {"c2p_cli": "clip2point", "kernels": "clip2point.kernels", "training": "clip2point.training",
            "export": "clip2point.export", "tools": "tools"}


def module_name(path: Path) -> str:
    """The dotted name of a source file: c2p_cli/io/_ply.py -> clip2point.io._ply."""
    folder = path.relative_to(ROOT).parts[0]
    rel = path.relative_to(ROOT / folder).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join([PACKAGES[folder], *parts])


def source_modules() -> dict[str, Path]:
    """Every module of the source folders, by dotted name."""
    return {module_name(p): p for folder in PACKAGES for p in sorted((ROOT / folder).rglob("*.py"))
            if "__pycache__" not in p.parts}


def imported(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """Every module an import statement of `source` names (top level or inside functions), made
    absolute: `module` is the dotted name of the file the source comes from."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return found
