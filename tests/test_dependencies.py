"""Imports run one way (ARCHITECTURE.md, "Dependencies"): storage knows nothing of the crawl
that fills it, a policy never sees the network or the model, and no module imports itself back
through others. Read from the source with `ast`, so imports inside functions count too."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cache", "policies", "explorer")
TOP = ("cache", "policies", "explorer", "cli")

# What a policy may import from explorer: the small, model-free pieces of what it takes and gives.
POLICY_ALLOWED = {
    "explorer.config",    # PolicyConfig: a policy's own settings
    "explorer.records",   # Query and QueryOutcome: what a policy returns and learns from
    "explorer.inputs.vocab",     # normalise_concept, file_concepts: concept names read and compared as the
                          # vocabulary spells them (its text model is loaded only to embed, never here)
}

# explorer's stages, each importing only those before it (and the shared modules at the top of
# explorer/, which import no stage): ARCHITECTURE.md, "Dependencies"
STAGES = ("explorer.crawl", "explorer.inputs", "explorer.model", "explorer.engines", "explorer.sandbox",
          "explorer.run")
STAGE_MAY_IMPORT = {
    "explorer.crawl": set(),
    "explorer.inputs": {"explorer.crawl"},
    "explorer.model": {"explorer.crawl", "explorer.inputs"},
    "explorer.engines": {"explorer.inputs"},
    "explorer.sandbox": set(),
    "explorer.run": {"explorer.crawl", "explorer.inputs", "explorer.model", "explorer.engines", "explorer.sandbox"},
}

# Cycles known and not yet broken; any other one fails, and so does an entry here that is gone.
KNOWN_CYCLES: set[frozenset[str]] = set()


@dataclass(frozen=True)
class Import:
    source: str          # the importing module
    target: str          # the project module imported
    line: int
    type_only: bool      # under `if TYPE_CHECKING:`: never runs


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of PACKAGES and cli.py: dotted name -> file."""
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    if (root / "cli.py").exists():
        mods["cli"] = root / "cli.py"
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _owner(name: str, mods: dict[str, Path]) -> str | None:
    """The project module that `name` (a module, or a name inside one) belongs to."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, mods: dict[str, Path]) -> list[Import]:
    """The project modules `name` imports, anywhere in the file. `from pkg import sub` imports the
    module pkg.sub (not pkg's __init__ as such); importing pkg.sub also runs pkg/__init__, which
    is not counted: a package __init__ that imports its submodules is not a cycle with them."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: list[Import] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module for a in node.names]
        for t in targets:
            owner = _owner(t, mods) if t.split(".")[0] in TOP else None
            if owner and owner != name:
                out.append(Import(name, owner, node.lineno, type_only))
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(ast.parse(path.read_text(), str(path)), False)
    return out


def all_imports(mods: dict[str, Path]) -> list[Import]:
    return [imp for name, path in mods.items() for imp in imports_of(name, path, mods)]


def layer_violations(imports: list[Import]) -> list[str]:
    """(a) cache imports nothing of explorer, policies or cli; (b) policies import no cli and
    only POLICY_ALLOWED of explorer. Type-only imports count: they are still arrows up."""
    out = []
    for imp in imports:
        top, target = imp.source.split(".")[0], imp.target.split(".")[0]
        if top == "cache" and target in ("explorer", "policies", "cli"):
            out.append(f"{imp.source}:{imp.line} imports {imp.target} (cache imports only cache)")
        if top == "policies" and (target == "cli" or (target == "explorer" and imp.target not in POLICY_ALLOWED)):
            out.append(f"{imp.source}:{imp.line} imports {imp.target} (policies may import "
                       f"{', '.join(sorted(POLICY_ALLOWED))} of explorer)")
    return out


def stage_of(module: str) -> str | None:
    """The stage package of an explorer module; None for the shared modules and everything else."""
    return next((s for s in STAGES if module == s or module.startswith(s + ".")), None)


def stage_violations(imports: list[Import]) -> list[str]:
    """Imports from one stage of explorer/ into a stage it may not import (STAGE_MAY_IMPORT), and
    imports of a stage by explorer's shared modules."""
    out = []
    for imp in imports:
        source, target = stage_of(imp.source), stage_of(imp.target)
        if target is None or source == target or not imp.source.startswith("explorer"):
            continue
        if source is None or target not in STAGE_MAY_IMPORT[source]:
            out.append(f"{imp.source}:{imp.line} imports {imp.target} "
                       f"({source or 'a shared module'} may import {', '.join(sorted(STAGE_MAY_IMPORT.get(source, ()))) or 'no stage'})")
    return out


def cycles(imports: list[Import]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (or a module importing itself) in
    the graph of imports that run (Tarjan's algorithm, iterative)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.source, set())
        graph.setdefault(imp.target, set())
        if not imp.type_only:
            graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(frozenset(component))
    return found


def test_the_walk_sees_the_project():
    mods = project_modules()
    assert {"cli", "cache.verify", "policies.registry", "explorer.run.loop", "explorer.sandbox.server",
            "explorer.engines.base"} <= set(mods)
    imports = all_imports(mods)
    assert Import("cache.verify", "cache.paths", 0, False) in [
        Import(i.source, i.target, 0, i.type_only) for i in imports]


def test_cache_and_policies_import_nothing_above_them():
    assert layer_violations(all_imports(project_modules())) == []


def test_explorers_stages_import_only_the_stages_before_them():
    assert stage_violations(all_imports(project_modules())) == []
    assert set(STAGES) <= set(project_modules())  # (each stage is a package)


def test_the_stage_check_catches_an_arrow_back(tmp_path):
    mods = _tree(tmp_path, {
        "explorer/__init__.py": "", "explorer/config.py": "import explorer.model.mug\n",
        "explorer/crawl/__init__.py": "", "explorer/crawl/images.py": "import explorer.config\n",
        "explorer/model/__init__.py": "",
        "explorer/model/mug.py": "from explorer.crawl import images\ndef f():\n    from explorer.run import loop\n",
        "explorer/run/__init__.py": "", "explorer/run/loop.py": "import explorer.model.mug\n",
    })
    assert stage_violations(all_imports(mods)) == [
        "explorer.config:1 imports explorer.model.mug (a shared module may import no stage)",
        "explorer.model.mug:3 imports explorer.run.loop (explorer.model may import explorer.crawl, explorer.inputs)"]


def test_no_import_cycles():
    found = set(cycles(all_imports(project_modules())))
    assert sorted(sorted(c) for c in found - KNOWN_CYCLES) == []
    assert sorted(sorted(c) for c in KNOWN_CYCLES - found) == [], "a known cycle is gone: drop it from KNOWN_CYCLES"


def _tree(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return project_modules(root)


def test_the_checks_catch_imports_inside_functions_and_relative_ones(tmp_path):
    mods = _tree(tmp_path, {
        "cache/__init__.py": "",
        "cache/db.py": "def f():\n    from explorer.errors import UserError\n",
        "cache/store.py": "from . import db\n",
        "policies/__init__.py": "from policies import gp  # registers\n",
        "policies/gp.py": "from policies.registry import register\nimport explorer.run.loop\n",
        "policies/registry.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from policies.gp import X\n",
        "explorer/__init__.py": "",
        "explorer/errors.py": "",
        "explorer/run/loop.py": "from explorer.crawl import crawler\n",
        "explorer/crawl/crawler.py": "def g():\n    import explorer.run.loop\n",
        "cli.py": "",
    })
    imports = all_imports(mods)
    assert layer_violations(imports) == [
        "cache.db:2 imports explorer.errors (cache imports only cache)",
        "policies.gp:2 imports explorer.run.loop (policies may import explorer.config, explorer.inputs.vocab, "
        "explorer.records of explorer)"]
    # the package __init__ importing gp, and a type-only import back, are no cycle; a function's import is
    assert cycles(imports) == [frozenset({"explorer.run.loop", "explorer.crawl.crawler"})]
    assert Import("cache.store", "cache.db", 1, False) in imports
