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


# Calls that write a file: open(..., "w"/"a"/"x"...), Path.write_text/write_bytes, np.save*,
# torch.save, safetensors' save_file, PIL's Image.save, shutil copies, OpenCV's VideoWriter,
# PyAV's av.open(..., mode="w").
_WRITING_ATTRIBUTES = {"write_text", "write_bytes", "save", "savez", "savez_compressed",
                       "save_file", "copyfile", "copy", "copy2", "copytree", "VideoWriter"}
_ATOMIC_CONTEXTS = ("atomic_path(", "staged_folder(")
# Functions that write only into a temporary path their caller took from `atomic_path`.
_WRITERS_OF_TEMPORARY_PATHS = {
    "io/tracks.py": {"_write_npz", "_write_csv", "_write_json"},
    "io/video.py": {"_write_with_pyav", "_write_gif"},
}
BENCHMARKS = PACKAGE.parents[1] / "benchmarks"
# Run inside a checkout of a reference commit (`--reference`), whose taptr may predate
# `taptr.io.atomic`: they write only scratch files in a temporary folder of the caller.
_BENCHMARK_WORKERS = {"train_step_worker.py"}


def _is_write(call: ast.Call) -> bool:
    function = call.func
    if isinstance(function, ast.Name) and function.id in ("open", "save_file"):
        if function.id == "save_file":
            return True
        mode = call.args[1] if len(call.args) > 1 else next(
            (k.value for k in call.keywords if k.arg == "mode"), None)
        return isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+")
    if isinstance(function, ast.Attribute):
        if function.attr == "open" and ast.unparse(function.value) == "av":
            mode = next((k.value for k in call.keywords if k.arg == "mode"), None)
            return isinstance(mode, ast.Constant) and "w" in str(mode.value)
        if function.attr == "save" and ast.unparse(function.value) in ("result", "self"):
            return False  # TrackResult.save writes through save_tracks (atomic)
        if function.attr == "copy" and not ast.unparse(function.value).startswith("shutil"):
            return False  # dict/array copies
        if call.args and "buffer" in ast.unparse(call.args[0]):
            return False  # into memory
        return function.attr in _WRITING_ATTRIBUTES
    return False


def _unrouted_writes(path: Path, root: Path = PACKAGE) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    relative = path.relative_to(root).as_posix()
    allowed_functions = _WRITERS_OF_TEMPORARY_PATHS.get(relative, set())
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _is_write(node)):
            continue
        ancestor, routed = node, False
        while ancestor in parents and not routed:
            ancestor = parents[ancestor]
            if isinstance(ancestor, ast.With):
                routed = any(ast.unparse(item.context_expr).startswith(_ATOMIC_CONTEXTS)
                             for item in ancestor.items)
            elif isinstance(ancestor, ast.FunctionDef):
                routed = ancestor.name in allowed_functions
        if not routed:
            found.append(f"{relative}:{node.lineno}: {ast.unparse(node)[:60]}")
    return found


def test_every_file_is_written_through_io_atomic():
    """A reader or a crash never sees a half-written output: every write of the package (and
    of benchmarks/) sits inside `atomic_path` / `staged_folder` (taptr.io.atomic), or in a
    function that only writes the temporary path such a block gave it."""
    unrouted = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "io/atomic.py":
            continue
        unrouted += _unrouted_writes(path)
    for path in sorted(BENCHMARKS.glob("*.py")):
        if path.name not in _BENCHMARK_WORKERS:
            unrouted += _unrouted_writes(path, BENCHMARKS)
    assert unrouted == []


def test_the_write_scan_finds_a_plain_write(tmp_path):
    module = tmp_path / "writer.py"
    module.write_text("import numpy as np\n\ndef dump(path, a):\n    np.save(path, a)\n"
                      "    with atomic_path(path) as temporary:\n        np.save(temporary, a)\n"
                      "    open(path, 'a').write('x')\n    open(path).read()\n")
    assert _unrouted_writes(module, tmp_path) == ["writer.py:4: np.save(path, a)",
                                                  "writer.py:7: open(path, 'a')"]

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
