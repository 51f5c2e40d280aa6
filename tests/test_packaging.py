"""The two install descriptions (pyproject.toml and environment.yml) must name the same dependencies."""
import re
import tomllib
from pathlib import Path

import pytest

from deap_lib.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_requirements():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    proj = data["project"]
    return proj["dependencies"], proj["optional-dependencies"]["dev"]


def _environment_pip_list():
    """The pip: section of environment.yml, read as plain text (no yaml dependency needed)."""
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == "- pip:")
    indent = len(lines[start + 1]) - len(lines[start + 1].lstrip())
    out = []
    for l in lines[start + 1:]:
        if not l.strip() or l.lstrip().startswith("#"):
            continue
        if len(l) - len(l.lstrip()) < indent:
            break
        out.append(l.strip()[2:].strip())
    return out


def test_environment_yml_matches_pyproject():
    deps, dev = _pyproject_requirements()
    pip_list = [r for r in _environment_pip_list() if not r.startswith("-e")]
    assert sorted(map(_name, deps + dev)) == sorted(map(_name, pip_list))
    # The version ranges agree too, not only the names.
    assert sorted(r.replace(" ", "") for r in deps + dev) == sorted(r.replace(" ", "") for r in pip_list)


def test_environment_yml_installs_the_package_and_python311():
    text = (ROOT / "environment.yml").read_text()
    assert "python=3.11" in text
    assert "- -e ." in text


def test_makefile_pins_torch_for_the_install_step():
    mk = (ROOT / "Makefile").read_text()
    assert "torch==2.14.1 torchvision==0.29.1" in mk
    deps, _ = _pyproject_requirements()
    assert not any("==" in d for d in deps), "pyproject keeps ranges; pins live in the Makefile"


def test_registry_unknown_name_lists_valid_names():
    reg = Registry("widget")
    reg.register("b")(1)
    reg.register("a", 2)
    assert reg.get("a") == 2 and reg.names() == ["a", "b"] and "a" in reg and len(reg) == 2
    with pytest.raises(KeyError, match=r"unknown widget 'c'; valid names: a, b"):
        reg.get("c")
    with pytest.raises(KeyError, match="already registered"):
        reg.register("a", 3)
    reg.register("a", 3, override=True)
    assert reg.get("a") == 3
