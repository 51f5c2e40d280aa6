"""The import graph of a package read from its source (every ``import`` statement, those inside functions
included) and the checks of ``tests/test_layers.py``: the layers contract of ``pyproject.toml``
(import-linter's format) and the absence of import cycles."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

Graph = Dict[str, Set[str]]


def module_names(src: Path, package: str) -> Dict[str, Path]:
    """``{dotted module name: file}`` of every module of ``package`` under ``src`` (``src/package``)."""
    out = {}
    for p in sorted((src / package).rglob("*.py")):
        parts = list(p.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def import_graph(src: Path, package: str) -> Graph:
    """``{module: modules of the package it imports}``; ``from pkg import name`` counts as an import of the
    submodule ``pkg.name`` where that is a module, else of ``pkg``."""
    mods = module_names(src, package)
    graph: Graph = {m: set() for m in mods}
    for mod, path in mods.items():
        here = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else (node.module or "")
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
                targets = [t for t in targets[:-1] if t in mods] or [base]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: Graph) -> List[List[str]]:
    """The import cycles of ``graph``: its strongly connected components of more than one module."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def parse_layers(layers: List[str], container: str) -> List[List[Tuple[str, bool]]]:
    """Layer strings (top first) as lists of ``(module, independent)``: ``"a | b"`` independent siblings,
    ``"a : b"`` siblings that may import each other."""
    out = []
    for layer in layers:
        sep = "|" if "|" in layer else ":"
        out.append([(f"{container}.{name.strip()}", sep == "|") for name in layer.split(sep)])
    return out


def layer_violations(graph: Graph, layers: List[str], container: str) -> List[str]:
    """Every import that runs upward through ``layers`` or joins two independent siblings, and every
    top-level module of ``container`` that no layer names."""
    parsed = parse_layers(layers, container)
    where: Dict[str, Tuple[int, str, bool]] = {}
    for rank, layer in enumerate(parsed):
        for name, independent in layer:
            where[name] = (rank, name, independent)

    def home(mod: str):
        parts = mod.split(".")
        for i in range(len(parts), 0, -1):
            key = ".".join(parts[:i])
            if key in where:
                return where[key]
        return None

    problems = []
    tops = {".".join(m.split(".")[:2]) for m in graph if m != container}
    problems += [f"{t} is in no layer of the contract" for t in sorted(tops) if home(t) is None]
    for mod in sorted(graph):
        a = home(mod)
        for dep in sorted(graph[mod]):
            b = home(dep)
            if a is None or b is None or a[1] == b[1]:
                continue
            if b[0] < a[0]:
                problems.append(f"{mod} imports {dep}: layer '{b[1]}' is above layer '{a[1]}'")
            elif b[0] == a[0] and a[2]:
                problems.append(f"{mod} imports {dep}: '{a[1]}' and '{b[1]}' are independent siblings")
    return problems
