"""The frame every page shares: a header, navigation between pages, and one place for styling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import panel as pn

PAGES: list[tuple[str, str]] = [
    ("runs", "Runs"),
    ("capture", "Capture"),
    ("cdas", "CDAS steering"),
    ("boundary", "Boundary"),
    ("credit", "Credit"),
    ("tir", "TIR"),
]

# Analyses shown by the pages above (or, for training and ground-truth runs, by their package's page and Runs);
# every other registered analysis gets a generated page (apps/pages/generic.py).
SHOWN = {"capture", "cdas-toy", "cdas-train", "cdas-steer", "cdas-steer-sweep", "boundary", "boundary-episodes",
         "credit", "credit-train", "credit-tabular", "tir"}
GENERATED = "analysis-"  # slug prefix of generated pages
FIGURE_ROUTE = "figure"  # /figure/RUN_ID/STEM.png serves a run's saved figure (apps/server.py)


def slug_of(analysis: str) -> str:
    return GENERATED + analysis


def pages() -> list[tuple[str, str]]:
    """(slug, label) of every page: the ones above, then one generated page per registered analysis they miss."""
    from diag.registry import ANALYSES

    return PAGES + [(slug_of(name), name) for name in ANALYSES if name not in SHOWN]


NAV_CSS = """
a { display: block; padding: 7px 10px; margin: 2px 0; border-radius: 4px; text-decoration: none; color: #1f2d3d;
  font-size: 15px; }
a:hover { background: #e8eef6; }
a.active { background: #d3e0f0; font-weight: 600; }
"""
INTRO_CSS = "p { color: #3d4852; font-size: 14px; margin: 0 0 6px 0; }"


def after_load(build: Callable[[], Any]) -> Any:
    """What ``build()`` returns, built and sent once the page has loaded: parts a user does not need first
    (launch forms, sections below the fold) then do not delay the page's own content (issue 18's first render)."""
    return pn.panel(build, defer_load=True)


def nav(active: str) -> pn.pane.HTML:
    links = "".join(
        f'<a href="./{slug}" class="{"active" if slug == active else ""}">{label}</a>' for slug, label in pages()
    )
    return pn.pane.HTML(f"<nav>{links}</nav>", sizing_mode="stretch_width", stylesheets=[NAV_CSS])


def page(active: str, title: str, intro: str, main: list[Any], sidebar: list[Any] | None = None) -> Any:
    """One app page: navigation and page controls in the sidebar, the question and content in the main area."""
    # Bootstrap, not Fast: the Fast theme pulls a web font from the internet, which offline machines lack.
    template = pn.template.BootstrapTemplate(
        title=title, site="diag workbench", site_url="./runs", header_background="#2f5d8a",
        sidebar_width=340,
    )
    template.sidebar.append(nav(active))
    for item in sidebar or []:
        template.sidebar.append(item)
    template.main.append(pn.Column(pn.pane.Markdown(intro, stylesheets=[INTRO_CSS]), *main,
                                   sizing_mode="stretch_width"))
    return template
