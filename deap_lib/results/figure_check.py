"""What a saved figure shows, and whether it reads at a glance (every series labelled or in a legend).

:func:`figure_series` lists, per axes, the plotted series (line, error bars, bars, scatter or filled area,
each with its label, ``None`` when it has none), the legend's entries and the axis labels; ``save_figure``
writes it beside the caption. :func:`figure_problems` names what a reader could not tell apart: an axes with
several series where one has no label or is missing from the legend, or an axes without axis labels. Bars
named category by category on their axis (with their unnamed error bars) need no legend; images need no
axis labels.
"""
from __future__ import annotations

from typing import Any, Dict, List

#: matplotlib's labels of artists nobody named start with "_" ("_child3", "_nolegend_", "_container0")
UNNAMED = "_"


def _label(artist) -> Any:
    text = artist.get_label()
    return None if not text or str(text).startswith(UNNAMED) else str(text)


def _children(container) -> set:
    out = set()
    for child in container.get_children():
        if child is not None:
            out.add(id(child))
    return out


def figure_series(fig) -> List[Dict[str, Any]]:
    """Per axes of ``fig`` (colour bars left out): ``series`` (``{"kind", "label"}``), ``legend`` (its
    entries, or the figure's), ``xlabel`` / ``ylabel``, ``x_categories`` / ``y_categories`` (whether an axis
    is named by category ticks) and ``image`` (whether it shows one)."""
    from matplotlib.container import BarContainer, ErrorbarContainer

    fig_legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    out = []
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        inside, series = set(), []
        for c in ax.containers:
            kind = "bars" if isinstance(c, BarContainer) else "errorbar" if isinstance(c, ErrorbarContainer) else "other"
            series.append({"kind": kind, "label": _label(c)})
            inside |= _children(c)
            if isinstance(c, BarContainer) and getattr(c, "errorbar", None) is not None:
                inside |= _children(c.errorbar)
        series += [{"kind": "line", "label": _label(a)} for a in ax.lines if id(a) not in inside]
        series += [{"kind": "collection", "label": _label(a)} for a in ax.collections if id(a) not in inside]
        legend = ax.get_legend()
        out.append({"series": series, "legend": [t.get_text() for t in legend.get_texts()] if legend else fig_legend,
                    "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(), "x_categories": _categories(ax.get_xticklabels()),
                    "y_categories": _categories(ax.get_yticklabels()), "image": bool(ax.images)})
    return out


def _categories(ticks) -> bool:
    """Whether an axis is named by category tick labels (not numbers)."""
    return any(t.get_text().strip() and not _numeric(t.get_text()) for t in ticks)


def _numeric(text: str) -> bool:
    try:
        float(text.replace("\u2212", "-").replace("%", ""))
        return True
    except ValueError:
        return False


def figure_problems(axes: List[Dict[str, Any]]) -> List[str]:
    """What a reader could not tell from the figure (one line per problem, axes counted from 0)."""
    problems = []
    for i, ax in enumerate(axes):
        series = ax["series"]
        if ax["x_categories"] or ax["y_categories"]:  # bars named by their category ticks, error bars with them
            series = [s for s in series if not (s["kind"] in ("bars", "errorbar") and s["label"] is None)]
        named = [s["label"] for s in series if s["label"] is not None]
        if len(series) > 1:
            if len(named) < len(series):
                problems.append(f"axes {i}: {len(series) - len(named)} of {len(series)} series have no label")
            missing = sorted(set(named) - set(ax["legend"]))
            if missing:
                problems.append(f"axes {i}: not in the legend: {', '.join(missing)}")
        if ax["series"] and not ax["image"]:
            if not ax["xlabel"] and not ax["x_categories"]:
                problems.append(f"axes {i}: no x-axis label")
            if not ax["ylabel"] and not ax["y_categories"]:
                problems.append(f"axes {i}: no y-axis label")
    return problems
