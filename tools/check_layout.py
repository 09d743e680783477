"""The shape rules of the package, checked by ``make lint`` and by the test suite.

- no module over MAX_MODULE_LINES lines and no function over MAX_FUNCTION_LINES;
- no import cycle between the package's modules (imports inside functions count: a cycle a
  function hides is still one; imports under ``if TYPE_CHECKING:`` do not, they never run);
- no private name (``_x``) taken from another module, by ``from m import _x`` or ``m._x``.

Cyclomatic complexity is ruff's C901 (pyproject.toml). Prints one line per breach and exits 1
if there is any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
PACKAGE = "msn_cli"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that can run (the bodies of ``if TYPE_CHECKING:`` left out)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _absolute(mod: str, is_pkg: bool, level: int, target: str | None) -> str:
    if not level:
        return target or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([target] if target else [])])


class Module:
    def __init__(self, path: Path, root: Path) -> None:
        self.path = path
        self.name = module_name(path, root)
        self.is_pkg = path.name == "__init__.py"
        self.source = path.read_text()
        self.tree = ast.parse(self.source, str(path))


def check(root: Path) -> list[str]:
    modules = {m.name: m for m in (Module(p, root) for p in sorted((root / PACKAGE).rglob("*.py")))}
    problems: list[str] = []
    edges: dict[str, set[str]] = {}
    for m in modules.values():
        problems += _sizes(m, root)
        edges[m.name], found = _imports(m, modules, root)
        problems += found
        edges[m.name].discard(m.name)
    problems.extend(f"import cycle: {' -> '.join(c)}" for c in _cycles(edges))
    return problems


def _sizes(m: Module, root: Path) -> list[str]:
    rel = m.path.relative_to(root)
    problems = []
    lines = len(m.source.splitlines())
    if lines > MAX_MODULE_LINES:
        problems.append(f"{rel}: {lines} lines (at most {MAX_MODULE_LINES})")
    for node in ast.walk(m.tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = (node.end_lineno or node.lineno) - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                problems.append(f"{rel}:{node.lineno}: {node.name}() is {n} lines "
                                f"(at most {MAX_FUNCTION_LINES})")
    return problems


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _imports(m: Module, modules: dict[str, Module], root: Path) -> tuple[set[str], list[str]]:
    """The package modules ``m`` imports at run time, and its uses of others' private names."""
    rel = m.path.relative_to(root)
    edges: set[str] = set()
    problems: list[str] = []
    aliases: dict[str, str] = {}  # local name -> the package module it stands for
    for node in _runtime_nodes(m.tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == PACKAGE:
                    edges.add(a.name if a.name in modules else a.name.rsplit(".", 1)[0])
                    if a.asname:
                        aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(m.name, m.is_pkg, node.level, node.module)
            if base.split(".")[0] != PACKAGE:
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in modules:  # a module, imported by name from its package
                    edges.add(sub)
                    aliases[a.asname or a.name] = sub
                    continue
                edges.add(base)
                if _private(a.name):
                    problems.append(f"{rel}:{node.lineno}: imports the private name {a.name} "
                                    f"from {base}")
    problems += [f"{rel}:{node.lineno}: uses the private name {aliases[node.value.id]}.{node.attr}"
                 for node in ast.walk(m.tree)
                 if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                 and node.value.id in aliases and _private(node.attr)]
    return edges, problems


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_one_cycle(sorted(component), edges))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _one_cycle(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself, for the message."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return component


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    problems = check(root)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
