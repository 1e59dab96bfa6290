"""Matplotlib figures rendered to inline, reproducible PNG data URIs.

Figures are made with the object API on an explicit Agg canvas (``Figure`` + ``FigureCanvasAgg``),
never through pyplot and without ``matplotlib.use``: building a report changes no global backend
or figure state of the caller (e.g. a notebook) and needs no display. The PNG
carries no ``Software`` text chunk and no timestamp: the same figure always gives the same bytes.

Model-derived names are never drawn into figures (matplotlib would read ``$...$`` as mathtext);
they go into the HTML around the figure, where jinja2 escapes them.
"""

from __future__ import annotations

import base64
import io

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
# Fixed style for every report figure, applied per figure through rc_context.
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.edgecolor": "#9aa3ad",
    "axes.linewidth": 0.8,
    "axes.grid": False,
    "xtick.color": "#39424e",
    "ytick.color": "#39424e",
    "text.color": "#1f2933",
    "axes.labelcolor": "#1f2933",
    "svg.hashsalt": "trtq",  # fixed ids should a figure ever be written as SVG
    "path.simplify": True,
}


def new_figure(width_px: int, height_px: int) -> Figure:
    """A blank figure of the given size in pixels (at :data:`DPI`), white background; make and draw it
    inside :func:`style`."""
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def style():
    """Context manager applying the report style while drawing."""
    return matplotlib.rc_context(STYLE)


def png_bytes(fig: Figure) -> bytes:
    """Render ``fig`` to PNG bytes with no metadata, so equal figures give equal bytes (call inside
    :func:`style`, as the drawing was)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return buf.getvalue()


def png_data_uri(fig: Figure) -> str:
    """``data:image/png;base64,...`` for ``fig``."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig)).decode("ascii")
