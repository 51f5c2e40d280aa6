"""The layer contract of ``pyproject.toml`` holds for deap_lib (lazy imports included), no import closes a cycle,
and the checks fail on a planted upward import, a planted cycle and a module placed in no layer."""
from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from layer_contract import cycles, import_graph, layer_violations

REPO = Path(__file__).resolve().parents[1]


def _contract():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in cfg["contracts"] if c["type"] == "layers"]
    assert cfg["root_package"] == "deap_lib" and contract["containers"] == ["deap_lib"]
    return contract["layers"]


def test_deap_lib_keeps_its_layers_and_has_no_import_cycle():
    graph = import_graph(REPO, "deap_lib")
    assert "deap_lib.config" in graph["deap_lib.methods.runner"]  # the graph is read at all
    assert "deap_lib.inference" in graph["deap_lib.resolution"]  # imports inside functions count
    assert layer_violations(graph, _contract(), "deap_lib") == []
    assert cycles(graph) == []


@pytest.fixture()
def copy_of_lib(tmp_path):
    shutil.copytree(REPO / "deap_lib", tmp_path / "deap_lib", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _plant(root: Path, module: str, line: str) -> None:
    path = root / module
    path.write_text(path.read_text() + "\n\n" + line + "\n")


def test_a_planted_upward_import_inside_a_function_fails(copy_of_lib):
    _plant(copy_of_lib, "deap_lib/config.py", "def _late():\n    from .study import Study\n    return Study")
    problems = layer_violations(import_graph(copy_of_lib, "deap_lib"), _contract(), "deap_lib")
    assert problems == ["deap_lib.config imports deap_lib.study: layer 'deap_lib.study' is above layer "
                        "'deap_lib.config'"]


def test_an_import_between_independent_siblings_fails(copy_of_lib):
    _plant(copy_of_lib, "deap_lib/results/tables.py", "from ..study import Study  # noqa: E402")
    problems = layer_violations(import_graph(copy_of_lib, "deap_lib"), _contract(), "deap_lib")
    assert problems == ["deap_lib.results.tables imports deap_lib.study: 'deap_lib.results' and 'deap_lib.study' "
                        "are independent siblings"]


def test_a_planted_cycle_inside_one_layer_fails(copy_of_lib):
    # registry -> runner -> registry: both in the methods layer, so only the cycle check sees it
    _plant(copy_of_lib, "deap_lib/methods/registry.py", "def _late():\n    from . import runner\n    return runner")
    graph = import_graph(copy_of_lib, "deap_lib")
    assert layer_violations(graph, _contract(), "deap_lib") == []
    assert cycles(import_graph(REPO, "deap_lib")) == []  # none before the planted import
    [cycle] = cycles(graph)  # one strongly connected group: the two planted modules and what links them
    assert {"deap_lib.methods.registry", "deap_lib.methods.runner"} <= set(cycle) <= {
        "deap_lib.methods.registry", "deap_lib.methods.runner", "deap_lib.methods.recut"}


def test_a_new_module_must_be_placed_in_a_layer(copy_of_lib):
    (copy_of_lib / "deap_lib" / "newthing.py").write_text("from .config import RunConfig\n")
    problems = layer_violations(import_graph(copy_of_lib, "deap_lib"), _contract(), "deap_lib")
    assert problems == ["deap_lib.newthing is in no layer of the contract"]


def test_the_graph_reader_against_a_hand_made_package(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import os\nfrom . import b\nfrom .sub import c as see\n")
    (pkg / "b.py").write_text("def f():\n    from .sub.c import X\n    import pkg.a\n")
    (pkg / "sub" / "__init__.py").write_text("from .c import X\nfrom .. import b\n")
    (pkg / "sub" / "c.py").write_text("X = 1\nfrom pkg.b import f\n")
    assert import_graph(tmp_path, "pkg") == {
        "pkg": set(), "pkg.a": {"pkg.b", "pkg.sub.c"}, "pkg.b": {"pkg.sub.c", "pkg.a"},
        "pkg.sub": {"pkg.sub.c", "pkg.b"}, "pkg.sub.c": {"pkg.b"}}
    assert cycles(import_graph(tmp_path, "pkg")) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
