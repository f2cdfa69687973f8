"""The package's shape: no import cycles between taptr modules, counting imports made inside
functions too (a lazy import that closes a cycle still ties two modules into one)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "taptr"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """taptr modules that `path` imports anywhere (module level or inside functions; not under
    `if TYPE_CHECKING:`, which never runs)."""
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in ast.walk(node):
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [f"{child.module}.{alias.name}" for alias in child.names]
                found |= {n for n in names if n in modules} or (
                    {child.module} if child.module in modules else set())
            elif isinstance(child, ast.Import):
                found |= {alias.name for alias in child.names if alias.name in modules}
    return found


def test_no_import_cycles():
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph = {name: _imports(path, modules) for name, path in paths.items()}
    cycles = []

    def visit(name, stack, on_stack, done):
        stack.append(name)
        on_stack.add(name)
        for target in sorted(graph[name]):
            if target in on_stack:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in done:
                visit(target, stack, on_stack, done)
        stack.pop()
        on_stack.discard(name)
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [], set(), done)
    assert not cycles, cycles


def test_the_paper_package_imports_no_addition_or_kernel_and_names_none():
    """models/taptrv2 is the paper's network: it imports nothing from models/additions or
    models/kernels (not even inside functions), and names none of our additions."""
    paper = PACKAGE / "models" / "taptrv2"
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    ours = ("taptr.models.additions", "taptr.models.kernels", "taptr.models.build",
            "taptr.models.options")
    for path in sorted(paper.rglob("*.py")):
        imported = _imports(path, modules)
        bad = sorted(name for name in imported if name.startswith(ours))
        assert not bad, f"{path.name} imports {bad}"
        text = path.read_text().lower()
        for word in ("correlation", "template", "motion_correction", "motion correction"):
            assert word not in text, f"{path.name} names {word!r}"
