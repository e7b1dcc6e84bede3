"""The shape of the code (docs/architecture.md): a kernel small enough to read in one sitting, an
application on top of it, plugins that share through the kernel, and one direction of imports.

These tests read the source (``ast``) and import modules in a fresh interpreter; they load no
model.
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "grefine_core"
PLUGINS = ROOT / "plugins"
#: The most lines of code the kernel may hold (blank lines, comments and docstrings not counted).
KERNEL_BUDGET = 1500
#: The documented delegates of the Python API: the only places where the kernel reaches the
#: application, each by an import inside the function when it is called.
DELEGATES = {
    ("pipeline.py", "fingerprint"),
    ("pipeline.py", "refine_many"),
    ("result.py", "to_dict"),
    ("result.py", "save"),
}


def kernel_files() -> list[Path]:
    """Every module of grefine_core outside the application and the testing helpers."""
    outside = ("app", "testing")
    return sorted(p for p in CORE.rglob("*.py") if p.relative_to(CORE).parts[0] not in outside)


def code_lines(path: Path) -> int:
    """Lines holding code: blank lines, comments and docstrings are not counted."""
    source = path.read_text("utf-8")
    tree = ast.parse(source)
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in skip or tok.type == tokenize.ENDMARKER:
            continue
        lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docstrings)
    return len(lines)


def test_code_lines_counts_code_only(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text(
        '"""Doc\nstring."""\n\n# a comment\nx = 1\n\n\ndef f():\n    """Doc."""\n    return (\n        x\n    )\n'
    )
    assert code_lines(sample) == 5  # x = 1; def f(); the three lines of the return


def test_kernel_fits_in_one_sitting():
    sizes = {str(p.relative_to(CORE)): code_lines(p) for p in kernel_files()}
    total = sum(sizes.values())
    largest = ", ".join(f"{n} {c}" for n, c in sorted(sizes.items(), key=lambda i: -i[1])[:5])
    assert total <= KERNEL_BUDGET, (
        f"the kernel holds {total} lines of code, more than {KERNEL_BUDGET}; largest: {largest}. "
        "Move application code to grefine_core/app/ or plugin code to a plugin"
    )


def _imports(tree: ast.AST) -> list[tuple[str, ast.AST, list[str]]]:
    """``(module, node, enclosing function names)`` of every import in ``tree``."""
    found: list[tuple[str, ast.AST, list[str]]] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = [*scope, child.name]
            if isinstance(child, ast.Import):
                found.extend((a.name, child, inner) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, child, inner))
                found.extend((f"{child.module}.{a.name}", child, inner) for a in child.names)
            visit(child, inner)

    visit(tree, [])
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                lines.update(range(stmt.lineno, stmt.end_lineno + 1))
    return lines


def test_the_kernel_reaches_the_app_only_through_the_documented_delegates():
    offenders = []
    for path in kernel_files():
        tree = ast.parse(path.read_text("utf-8"))
        typing_only = _type_checking_only(tree)
        for module, node, scope in _imports(tree):
            if not module.startswith("grefine_core.app") or node.lineno in typing_only:
                continue
            if not scope or (str(path.relative_to(CORE)), scope[-1]) not in DELEGATES:
                offenders.append(
                    f"{path.name}:{node.lineno} imports {module} in {scope or 'module'}"
                )
    assert not offenders, offenders


def test_importing_the_kernel_loads_neither_the_app_nor_a_plugin():
    modules = [
        "grefine_core." + ".".join(p.relative_to(CORE).with_suffix("").parts)
        for p in kernel_files()
        if p.stem != "__init__"
    ]
    plugins = tuple(p.name for p in PLUGINS.iterdir() if (p / "__init__.py").is_file())
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "import grefine_core\n"
        "grefine_core.GRefine, grefine_core.RefineResult\n"
        f"bad = sorted(m for m in sys.modules if m.startswith({('grefine_core.app', 'grefine_core.testing', 'torch', *plugins)!r}))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _module_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module-level imports between the modules of ``package`` (lazy imports left out)."""
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text("utf-8"))
        typing_only = _type_checking_only(tree)
        graph[name] = {
            m
            for m, node, scope in _imports(tree)
            if not scope and node.lineno not in typing_only and m.startswith(package)
        }
    return {n: {m for m in deps if m in graph and m != n} for n, deps in graph.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycles_in_grefine_core():
    graph = _module_graph(CORE, "grefine_core")
    # The package itself re-exports the kernel; a module importing ``grefine_core`` means that.
    for deps in graph.values():
        deps.discard("grefine_core")
    assert _cycle(graph) is None, _cycle(graph)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _plugin_imports() -> list[tuple[str, str, str]]:
    """``(plugin package, file, imported module)`` of every import in ``plugins/``."""
    out = []
    for path in PLUGINS.rglob("*.py"):
        package = path.relative_to(PLUGINS).parts[0]
        for module, node, _ in _imports(ast.parse(path.read_text("utf-8"))):
            out.append((package, f"{path.relative_to(ROOT)}:{node.lineno}", module))
    return out


def test_plugins_never_import_each_others_internals():
    """A plugin package imports the kernel and its own modules; the only packages shared between
    plugins are the ones that no slot owns (``grefine_parsing``, ``grefine_quality``)."""
    packages = {p.name for p in PLUGINS.iterdir() if (p / "__init__.py").is_file()}
    shared = {"grefine_parsing", "grefine_quality"}
    offenders = [
        f"{where} imports {module}"
        for package, where, module in _plugin_imports()
        if module.split(".")[0] in packages - shared - {package}
    ]
    assert not offenders, offenders


def test_only_the_evaluation_application_imports_the_app():
    offenders = [
        f"{where} imports {module}"
        for package, where, module in _plugin_imports()
        if module.startswith("grefine_core.app") and package != "grefine_metrics"
    ]
    assert not offenders, offenders


def _code_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants of the code (docstrings left out) and imported module names."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            if node.body and isinstance(node.body[0], ast.Expr):
                docstrings.add(id(node.body[0].value))
    out = [(node.lineno, m) for m, node, _ in _imports(tree)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                out.append((node.lineno, node.value))
    return out


def test_the_core_names_no_plugin():
    """Neither the kernel nor the app imports a plugin or names one in its code (the presets
    choose the plugins; commands and settings come from hooks and entry points)."""
    packages = {p.name for p in PLUGINS.iterdir() if (p / "__init__.py").is_file()}
    hits = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in CORE.rglob("*.py")
        if "testing" not in path.relative_to(CORE).parts
        for line, text in _code_strings(ast.parse(path.read_text("utf-8")))
        if any(pkg in text for pkg in packages)
    ]
    assert not hits, hits
