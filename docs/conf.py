"""Sphinx configuration of the deap-study documentation (``make docs``; built in the tests)."""
import os
import sys

from docutils import nodes
from docutils.parsers.rst import Directive

sys.path.insert(0, os.path.abspath(".."))

project = "deap-study"
author = "the deap-study authors"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
autodoc_member_order = "bysource"
autodoc_mock_imports = []
nitpicky = False


class CliHelp(Directive):
    """``.. cli-help::`` with an optional sub-command: the CLI's own ``--help`` text, generated at build time
    from the parser (the method and preset lists come from the registries)."""

    optional_arguments = 1

    def run(self):
        from deap_lib.__main__ import build_parser

        parser = build_parser()
        if self.arguments:
            sub = next(a for a in parser._actions if a.dest == "command")
            parser = sub.choices[self.arguments[0]]
        return [nodes.literal_block(text=parser.format_help())]


def setup(app):
    app.add_directive("cli-help", CliHelp)
