"""The shape of the code base, checked statically (no module is imported): no import cycles, a lower stage never
imports a higher one, and nothing imports the repository's folders by their bare names.

Every import counts, also the ones inside functions (a lazy import is still a dependency) and the lazy
`__getattr__` re-exports of a package `__init__` (the `_EXPORTS` name -> module table); only imports under
`if TYPE_CHECKING:` are left out, since they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Repository folder -> the package it installs as (setup.py's mapping).
PACKAGE_ROOTS = {
    "ideal": "ideal",
    "avatar": "ideal.avatar",
    "export": "ideal.export",
    "streamer": "ideal.streamer",
    "server": "ideal.server",
    "web": "ideal.web",
}
BARE_NAMES = ("avatar", "export", "streamer", "server", "web")
# Folders whose scripts and tests may not use the bare names either, although they are no part of the package.
OTHER_CODE = ("tests", "benchmarks", "scripts")

# A module of the left-hand package may import none of the right-hand ones (data flows one way).
FORBIDDEN = {
    "ideal.avatar": ("ideal.export", "ideal.streamer", "ideal.server", "ideal.web", "ideal.bench", "ideal.cli"),
    "ideal.export": ("ideal.streamer", "ideal.server", "ideal.web", "ideal.bench", "ideal.cli"),
    "ideal.streamer": ("ideal.server", "ideal.web", "ideal.bench", "ideal.cli"),
}


def _package_modules() -> dict[str, Path]:
    """Every module of the distribution: dotted name -> file."""
    modules: dict[str, Path] = {}
    for folder, package in PACKAGE_ROOTS.items():
        root = REPO / folder
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_runtime(node: ast.AST) -> Iterator[ast.AST]:
    """ast.walk, leaving out the bodies of `if TYPE_CHECKING:` (their `else:` still runs)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other
                yield from _walk_runtime(other)
            continue
        yield child
        yield from _walk_runtime(child)


def _imported_names(module: str, path: Path, is_package: bool) -> Iterator[tuple[str, str | None]]:
    """(module imported, name imported from it or None) for every runtime import of one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if is_package else module.rpartition(".")[0]
    for node in _walk_runtime(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                yield target, alias.name
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets
        ):
            # A lazy re-export table {name: "dotted.module"}: each module is imported on first attribute access.
            if isinstance(node.value, ast.Dict):
                for value in node.value.values:
                    if isinstance(value, ast.Constant) and isinstance(value.value, str):
                        yield value.value, None


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the distribution it imports (`from pkg import sub` counts as pkg.sub)."""
    modules = _package_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, imported in _imported_names(name, path, path.name == "__init__.py"):
            if imported is not None and f"{target}.{imported}" in modules:
                target = f"{target}.{imported}"
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_lower_stages_never_import_higher_ones():
    broken = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for lower, higher in FORBIDDEN.items()
        if _within(module, lower)
        for target in sorted(targets)
        if any(_within(target, h) for h in higher)
    ]
    assert not broken, "layering broken:\n" + "\n".join(broken)


def test_no_bare_top_level_imports():
    files = [path for path in _package_modules().values()]
    for folder in OTHER_CODE:
        files += sorted((REPO / folder).rglob("*.py"))
    broken = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] in BARE_NAMES:
                    broken.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert not broken, "use ideal.<stage>, not the bare folder name:\n" + "\n".join(broken)


def test_the_checker_sees_what_it_must():
    """The graph is not vacuous: a known function-level import and a lazy re-export are edges."""
    graph = import_graph()
    assert "ideal.streamer.engine" in graph["ideal.streamer"]
    assert "ideal.avatar.mouth.model" in graph["ideal.avatar.mouth"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
