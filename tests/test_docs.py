"""The documentation builds (Sphinx, warnings as errors, the CLI reference generated from the parser) and
every citation in the code and notebooks points at a page and section that exist in docs/."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CITE = re.compile(r"docs/([\w/]+\.rst)( §)?")


def citations(text: str):
    """``(page, section or "")`` of every ``docs/<page>.rst [§<Section title>]`` in ``text``: the section is
    the longest heading of that page the text after the mark starts with (``"?"``: none does)."""
    out = []
    for m in CITE.finditer(text):
        page, section = m.group(1), ""
        if m.group(2):
            target = REPO / "docs" / page
            rest = text[m.end():m.end() + 80]
            heads = sorted((h for h in _headings(target) if rest.startswith(h)), key=len) if target.is_file() else []
            section = heads[-1] if heads else "?"
        out.append((page, section))
    return out


def _sources():
    for folder in ("deap_lib", "notebooks", "benchmarks", "tests"):
        yield from sorted(p for p in (REPO / folder).rglob("*.py") if p.name != "test_docs.py")
    yield from sorted((REPO / "notebooks").glob("*.ipynb"))


def _headings(page: Path):
    lines = page.read_text().splitlines()
    return {a.strip() for a, b in zip(lines, lines[1:]) if b.strip() and set(b.strip()) <= set("=-~^") and a.strip()}


def test_docs_build_without_warnings(tmp_path):
    p = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going", str(REPO / "docs"),
                        str(tmp_path / "html")], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    reference = (tmp_path / "html" / "reference.html").read_text()
    for name in ("deap", "cdd", "crkd", "structure_kd", "thinned_kd"):  # the CLI help, from the registry
        assert name in reference


def test_every_citation_points_into_the_docs():
    found = 0
    for path in _sources():
        text = path.read_text()
        assert not re.search(r"METHODS (\d|\.md|pitfall)", text), f"{path}: cites METHODS outside the repository"
        for page, section in citations(text):
            found += 1
            assert (REPO / "docs" / page).is_file(), f"{path}: cites docs/{page}, which does not exist"
            assert section != "?", f"{path}: cites a section of docs/{page} that it does not have"
    assert found > 50


def test_the_citation_reader_on_a_hand_made_case(tmp_path):
    text = ("see docs/methods/deap.rst §PCP unit, then docs/study.rst §Splits. And docs/methods/crkd.rst; "
            "docs/methods/deap.rst §What is evaluated (b); docs/study.rst §Nowhere; docs/nope.rst")
    assert citations(text) == [("methods/deap.rst", "PCP unit"), ("study.rst", "Splits"), ("methods/crkd.rst", ""),
                               ("methods/deap.rst", "What is evaluated"), ("study.rst", "?"), ("nope.rst", "")]
    assert "PCP unit" in _headings(REPO / "docs" / "methods" / "deap.rst")
