"""The layout limits a newcomer relies on: a short package root, modules and functions that fit on a
few screens, imports that go one way.

- at most 16 modules directly in c2p_cli/ (the public surface and the method's basics; the rest
  lives in sub-packages named by their job);
- no source module (c2p_cli, kernels, training, export, tools) over 700 lines;
- no function body over 80 lines, from its first statement to its end (a docstring aside);
- no import cycle between modules, imports inside functions and relative imports included (read
  with `tests.source_tree.imported`, the layering test's walker). A module's import of a package
  it belongs to (`from clip2point import defaults` inside clip2point.training) is not an edge: the
  package's __init__ runs first whatever the module does.
"""

from __future__ import annotations

import ast

from tests.source_tree import ROOT, imported, source_modules

MAX_ROOT_MODULES = 16
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement of a function's body to its end, a docstring aside."""
    body = node.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return node.end_lineno - body[0].lineno + 1


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """(name, line, body lines) of every function (methods and nested ones too) over `limit`."""
    return [(node.name, node.lineno, body_lines(node)) for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > limit]


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """module -> the modules it imports, from {module: (source, is_package)}. A name imported from
    a module (`from .x import f`) counts as that module; a package a module belongs to is not an edge."""
    def resolve(name: str) -> str | None:
        parts = name.split(".")
        return next((".".join(parts[:k]) for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in sources), None)

    graph = {}
    for module, (source, is_package) in sources.items():
        targets = {resolve(name) for _, name in imported(source, module, is_package)}
        graph[module] = {t for t in targets if t is not None and t != module and not module.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_checks_catch_what_they_pin():
    long_body = "def f():\n    '''doc\n    string'''\n" + "    x = 1\n" * 81
    assert long_functions(long_body) == [("f", 1, 81)]
    assert long_functions(long_body.replace("    x = 1\n", "", 1)) == []  # 80 lines and a docstring pass
    nested = "class A:\n    def m(self):\n        def inner():\n" + "            y = 2\n" * 81
    assert [name for name, _, _ in long_functions(nested)] == ["m", "inner"]
    sources = {
        "p": ("from . import a\n", True),
        "p.a": ("def later():\n    from .b import g\n", False),
        "p.b": ("from p.a import later\nfrom p import a\n", False),
        "p.c": ("from . import b\nimport os\n", False),
    }
    graph = import_graph(sources)
    assert graph == {"p": {"p.a"}, "p.a": {"p.b"}, "p.b": {"p.a"}, "p.c": {"p.b"}}
    assert cycles(graph) == [["p.a", "p.b"]]


def test_the_package_root_holds_at_most_16_modules():
    root = sorted(p.name for p in (ROOT / "c2p_cli").glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root


def test_no_source_module_is_over_700_lines():
    long = {str(p.relative_to(ROOT)): n for p in source_modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, long


def test_no_function_body_is_over_80_lines():
    long = [f"{p.relative_to(ROOT)}:{line} {name} ({n} lines)"
            for p in source_modules().values() for name, line, n in long_functions(p.read_text())]
    assert not long, "\n".join(long)


def test_no_import_cycle_between_modules():
    sources = {name: (p.read_text(), p.name == "__init__.py") for name, p in source_modules().items()}
    found = cycles(import_graph(sources))
    assert not found, "\n".join(" <-> ".join(c) for c in found)
