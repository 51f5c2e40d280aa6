"""Study outputs: records, tables, figures, the main comparison table and the README's results section.

Layout of a results folder (``results/`` by default; everything written atomically)::

    results/
      summary.csv              one row per (run, form), appended by deap_lib.study
      records/<name>.json      each notebook's key metrics (:func:`record`)
      tables/<name>.csv|.md    tables (:func:`save_table`) + <name>.json holding the caption
      figures/<name>.png       figures (:func:`save_figure`, :func:`save_image`) + <name>.json caption
      executed/                notebooks executed by ``python -m deap_lib reproduce``

Artifact names start with the notebook number (``02_1_dilemma_map``); :func:`render_readme` groups the
README's results section by that prefix and orders tables and figures by name within a group.
"""
from .artifacts import (load_per_query, load_record, record, save_figure, save_image, save_table, table_records,
                        to_markdown)
from .choice import LAMBDA_GRID, arms_over_seeds, choose_on_validation, verdicts_over_seeds
from .figure_check import figure_problems, figure_series
from .readme import (END_MARKER, HEADLINE_END, HEADLINE_START, PAPER_CLAIM, START_MARKER, STAGES, executed_stamps,
                     has_study, headline, headline_table, notebook_durations, readme_section, render_headline,
                     render_readme, render_results_page, results_section)
from .tables import (MAIN_COLUMNS, PLATEAU_POINTS, SEED_COLUMNS, format_main_table, format_seed_summary, main_table,
                     one_machine, plateau, seed_differences, seed_summary)

__all__ = ["load_per_query", "load_record", "record", "save_figure", "save_image", "save_table", "table_records",
           "to_markdown", "END_MARKER", "START_MARKER", "HEADLINE_END", "HEADLINE_START", "PAPER_CLAIM", "headline_table",
           "render_headline", "render_results_page", "STAGES", "executed_stamps", "has_study", "headline",
           "notebook_durations", "readme_section", "render_readme", "results_section", "MAIN_COLUMNS",
           "PLATEAU_POINTS", "SEED_COLUMNS", "format_main_table", "format_seed_summary", "main_table", "one_machine",
           "plateau", "seed_differences", "seed_summary", "LAMBDA_GRID", "arms_over_seeds", "choose_on_validation",
           "verdicts_over_seeds", "figure_problems", "figure_series"]
