"""The architecture as a tested promise (issue 15): libraries below, programs on top, no import cycles.

The imports are read with `ast`, nothing is imported: `import a.b`, `from a import b`
(relative ones too), imports inside functions, and import strings — a string constant
"pkg.mod" or "pkg.mod:function" that names a module of this project, as `lw`'s command
table (lw/cli.py), the lazy exports of planners/__init__.py and Gymnasium entry points
(envs/__init__.py) use them. An import is an edge from the importing module to the project
module it names (`from a import b` names `a.b` when that is a module, else `a`); imports of
other distributions (torch, numpy, ...) are not edges.

Two rules:
(a) a package imports only itself and the packages ALLOWED lists for it;
(b) no import cycles between modules (strongly connected components of the module graph).
Today's exceptions are spelled out in KNOWN_VIOLATIONS and KNOWN_CYCLES. The test fails on
anything outside them AND on an entry that no longer occurs, so the lists only shrink.
"""
from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("worldmodel", "envs", "planners", "pretrain")
PROGRAMS = ("lw", "bench", "examples")  # lw: the command line; bench, examples: scripts. Imported by nothing below
PACKAGES = LIBRARIES + PROGRAMS

# package -> the other packages it may import. Target layering (issue 15), lowest first.
ALLOWED: dict[str, set[str]] = {
    "worldmodel": set(),                    # the model library: imports none of the others
    "envs": {"worldmodel"},                 # the MuJoCo tasks and LearnedWorld-v0 over a model
    "planners": {"worldmodel", "envs"},     # search, MPC, oracle, the benchmark as a library: no training, no programs
    "pretrain": {"worldmodel", "envs"},     # training and data as a library (envs for collection)
    "lw": set(LIBRARIES),                   # the programs: the `lw` CLI, its configs, one module per command
    "bench": set(PACKAGES) - {"bench"},     # scripts on top: everything
    "examples": set(PACKAGES) - {"examples"},
}

# (importer module, imported module) pairs that break ALLOWED today: none since the layout
# move of issue 15 (planners and pretrain never import programs).
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()

# Import cycles (as the set of modules in each strongly connected component) that exist today:
# none since issue 15 (the worldmodel {encoders, jepa, rae, world} loop is gone: JEPAEncoder
# lives in encoders, frames_to_float in worldmodel.frames).
KNOWN_CYCLES: set[frozenset[str]] = set()

_IMPORT_STRING = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(:[A-Za-z_]\w*)?")


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    where: str        # "path:line" of the import
    main_block: bool  # inside `if __name__ == "__main__":`


def project_modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the given top-level folders."""
    mods = {}
    for pkg in packages:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = f
    return mods


def _is_main_guard(node: ast.stmt) -> bool:
    t = node.test if isinstance(node, ast.If) else None
    return (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == "__name__"
            and len(t.comparators) == 1 and isinstance(t.comparators[0], ast.Constant)
            and t.comparators[0].value == "__main__")


def read_imports(root: Path, packages=PACKAGES) -> list[Edge]:
    """Every import of a project module by a project module (self-imports left out)."""
    mods = project_modules(root, packages)

    def known(name: str | None) -> str | None:  # the longest project-module prefix of a dotted name
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        in_main = {id(n) for stmt in tree.body if _is_main_guard(stmt) for n in ast.walk(stmt)}
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(tree):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [known(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: `from . import x`, `from ..a import x`
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else known(base) for a in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                m = _IMPORT_STRING.fullmatch(node.value)
                if m and ("." in m[1] or m[2]) and m[1] in mods:  # "pkg.mod" or "pkg.mod:func"
                    targets = [m[1]]
            edges += [Edge(mod, t, f"{rel}:{node.lineno}", id(node) in in_main)
                      for t in targets if t and t != mod]
    return edges


@functools.cache
def repo_imports() -> tuple[Edge, ...]:
    return tuple(read_imports(ROOT))


def layer_violations(edges: list[Edge], allowed=ALLOWED) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for e in edges:
        a, b = e.importer.split(".")[0], e.imported.split(".")[0]
        if a != b and b not in allowed[a]:
            where = out.setdefault((e.importer, e.imported), [])
            if e.where not in where:  # `from m import x, y` is one place
                where.append(e.where)
    return out


def import_graph(edges: list[Edge]) -> dict[str, set[str]]:
    """importer -> imported modules. Imports in a `__main__` block are left out: that code runs
    when the file is the program, as module `__main__`, which nothing imports back."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.imported, set())
        if not e.main_block:
            graph.setdefault(e.importer, set()).add(e.imported)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(frozenset(comp))
    return found


def _one_loop(graph: dict[str, set[str]], comp: frozenset[str]) -> list[str]:
    """A shortest loop through the first module of `comp`, for the failure message."""
    start = min(comp)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & comp):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return sorted(comp)


def _where(edges: list[Edge], a: str, b: str) -> str:
    return ", ".join(dict.fromkeys(e.where for e in edges if (e.importer, e.imported) == (a, b) and not e.main_block))


# ---------------------------------------------------------------------------------- the rules
def test_packages_import_only_the_packages_below_them():
    edges = repo_imports()
    assert len({e.importer for e in edges}) > 40, "the import reader found too few modules: is ROOT right?"
    found = layer_violations(edges)
    new = {k: v for k, v in found.items() if k not in KNOWN_VIOLATIONS}
    gone = KNOWN_VIOLATIONS - set(found)
    msg = []
    if new:
        msg.append("imports that break the layering (ALLOWED at the top of tests/test_layering.py):")
        msg += [f"  {a} -> {b}   ({', '.join(where)})" for (a, b), where in sorted(new.items())]
    if gone:
        msg.append("KNOWN_VIOLATIONS entries that no longer occur (delete them from the list):")
        msg += [f"  {a} -> {b}" for a, b in sorted(gone)]
    assert not msg, "\n".join(msg)


def test_no_import_cycles():
    edges = repo_imports()
    graph = import_graph(edges)
    found = set(cycles(graph))
    new, gone = found - KNOWN_CYCLES, KNOWN_CYCLES - found
    msg = []
    if new:
        msg.append("import cycles (each a strongly connected component, with one loop in it):")
        for comp in sorted(new, key=sorted):
            loop = _one_loop(graph, comp)
            msg.append(f"  {{{', '.join(sorted(comp))}}}")
            msg += [f"    {a} -> {b}   ({_where(edges, a, b)})" for a, b in zip(loop, loop[1:])]
    if gone:
        msg.append("KNOWN_CYCLES entries that no longer occur as they are written (update or delete them):")
        msg += [f"  {{{', '.join(sorted(comp))}}}" for comp in sorted(gone, key=sorted)]
    assert not msg, "\n".join(msg)


def test_known_lists_name_real_modules():
    mods = project_modules(ROOT)
    named = {m for pair in KNOWN_VIOLATIONS for m in pair} | {m for comp in KNOWN_CYCLES for m in comp}
    assert named <= set(mods), f"not modules of this project: {sorted(named - set(mods))}"
    assert set(ALLOWED) == set(PACKAGES)


# ------------------------------------------------------------------- the reader on a toy tree
def test_reader_sees_every_kind_of_import(tmp_path):
    files = {
        "lo/__init__.py": "from . import a\n",
        "lo/a.py": "import os\nimport lo.b as b\n",
        "lo/b.py": "def f():\n    from lo.c import thing\n",
        "lo/c.py": "from .a import x\nthing = 1\n",
        "lo/sub/__init__.py": "from ..b import f\n",
        "hi/__init__.py": "",
        "hi/cli.py": ('TABLE = {"x": ("lo.c:main", "help"), "y": "lo.sub", "z": "lo", "w": "not.ours:f"}\n'
                      'if __name__ == "__main__":\n    import hi.run\n'),
        "hi/run.py": "import hi.cli\nfrom lo import a, nothing\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    edges = read_imports(tmp_path, ("lo", "hi"))
    pairs = {(e.importer, e.imported) for e in edges}
    assert pairs == {("lo", "lo.a"), ("lo.a", "lo.b"), ("lo.b", "lo.c"), ("lo.c", "lo.a"),
                     ("lo.sub", "lo.b"), ("hi.cli", "lo.c"), ("hi.cli", "lo.sub"), ("hi.cli", "hi.run"),
                     ("hi.run", "hi.cli"), ("hi.run", "lo.a"), ("hi.run", "lo")}
    assert [e.main_block for e in edges if e.imported == "hi.run"] == [True]
    graph = import_graph(edges)
    assert cycles(graph) == [frozenset({"lo.a", "lo.b", "lo.c"})]  # hi.cli <-> hi.run only via __main__
    assert _one_loop(graph, cycles(graph)[0]) == ["lo.a", "lo.b", "lo.c", "lo.a"]
    assert layer_violations(edges, {"lo": set(), "hi": {"lo"}}) == {}
    assert layer_violations(edges, {"lo": set(), "hi": set()}) == {
        ("hi.cli", "lo.c"): ["hi/cli.py:1"], ("hi.cli", "lo.sub"): ["hi/cli.py:1"],
        ("hi.run", "lo.a"): ["hi/run.py:2"], ("hi.run", "lo"): ["hi/run.py:2"]}
