"""The compact overview strip of a compare heatmap: every layer of the model in one image.

Layers run left to right in topological order; each metric is one panel whose rows are the runs.
When there are more layers than pixel columns, each column shows the *worst* layer of the
contiguous group it covers (max error; NaN/Inf if any layer in the group had it), so a single bad
layer among 3,000 never disappears; NaN/Inf marks are then widened to 3 px so they are seen. A marker row on top shows pinned (FP32) layers as blue ticks
and the five worst layers as numbered red triangles matching the worst-layer table.
"""

from __future__ import annotations

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, LogNorm, to_rgba

from trtq.reports.colours import MISSING_COLOUR, NONFINITE_COLOUR, PINNED_COLOUR, LogScale, rgba
from trtq.reports.figures import new_figure, png_data_uri, style
from trtq.reports.layer_grid import LayerGrid
from trtq.reports.metrics import METRICS

WIDTH = 1320
LEFT, RIGHT = 190, 120
ROW_PX, MIN_PANEL_PX, GAP_PX, MARKER_PX, BOTTOM_PX, TOP_PX = 16, 34, 26, 26, 44, 8


def plot_text(text: str) -> str:
    """Make ``text`` safe for matplotlib: no mathtext interpretation of ``$``."""
    return text.replace("$", r"\$")


def bin_starts(n_layers: int, n_columns: int) -> np.ndarray:
    """First layer of each of ``min(n_layers, n_columns)`` contiguous, near-equal groups."""
    w = max(1, min(n_layers, n_columns))
    return (np.arange(w) * n_layers) // w


def binned_colours(grid: LayerGrid, key: str, scale: LogScale, starts: np.ndarray) -> np.ndarray:
    """RGBA image ``[runs, columns, 4]`` of metric ``key`` with the worst layer of each group."""
    err = grid.errors(key)
    nonfinite = grid.is_nonfinite()
    has_value = ~np.isnan(err)
    worst = np.maximum.reduceat(np.where(has_value, err, -np.inf), starts, axis=0)
    bad = np.logical_or.reduceat(nonfinite, starts, axis=0)
    any_value = np.logical_or.reduceat(has_value, starts, axis=0)
    img = rgba(scale.position(np.where(any_value, worst, np.nan)))
    img[~any_value] = to_rgba(MISSING_COLOUR)
    if len(starts) >= 300:  # one column is ~1 px here: widen NaN/Inf marks to 3 px to be seen
        wide = bad.copy()
        wide[1:] |= bad[:-1]
        wide[:-1] |= bad[1:]
        bad = wide
    img[bad] = to_rgba(NONFINITE_COLOUR)
    return np.transpose(img, (1, 0, 2))


def overview_strip(
    grid: LayerGrid, scales: dict[str, LogScale], keys: tuple[str, ...], worst_pos: list[int]
) -> str:
    """PNG data URI of the overview strip for metrics ``keys`` of ``grid``.

    ``worst_pos`` are row positions (not node indices) of the worst layers, worst first.
    """
    n_layers, n_runs = grid.shape
    panel_px = max(MIN_PANEL_PX, ROW_PX * n_runs)
    height = TOP_PX + MARKER_PX + len(keys) * (panel_px + GAP_PX) + BOTTOM_PX
    axes_w = WIDTH - LEFT - RIGHT
    starts = bin_starts(n_layers, axes_w)
    cmap = ListedColormap(rgba(np.linspace(0.0, 1.0, 256)))

    def box(top_px: float, h_px: float, left_px: float = LEFT, w_px: float = axes_w) -> list[float]:
        return [left_px / WIDTH, 1 - (top_px + h_px) / height, w_px / WIDTH, h_px / height]

    with style():
        fig = new_figure(WIDTH, height)
        extent = (-0.5, n_layers - 0.5, n_runs - 0.5, -0.5)
        top = TOP_PX
        marks = fig.add_axes(box(top, MARKER_PX))
        marks.set_xlim(extent[0], extent[1])
        marks.set_ylim(0, 1)
        marks.set_yticks([])
        marks.set_xticks([])
        for side in ("top", "right", "left"):
            marks.spines[side].set_visible(False)
        pinned = np.flatnonzero(grid.pinned_rows())
        if pinned.size:
            marks.vlines(pinned, 0.05, 0.55, colors=PINNED_COLOUR, linewidth=1.6)
        min_gap = 14 * n_layers / axes_w  # 14 px between rank labels, in layer units
        last_x = -np.inf
        # labels left to right, each nudged right of the previous one so none overlap
        for rank, pos in sorted(enumerate(worst_pos[:5], start=1), key=lambda rp: (rp[1], rp[0])):
            marks.plot([pos], [0.45], marker="v", color="#c62828", markersize=7, clip_on=False)
            last_x = max(float(pos), last_x + min_gap)
            marks.text(
                last_x,
                0.72,
                str(rank),
                ha="center",
                va="bottom",
                fontsize=8,
                color="#c62828",
                fontweight="bold",
            )
        top += MARKER_PX
        for k, key in enumerate(keys):
            ax = fig.add_axes(box(top, panel_px))
            ax.imshow(
                binned_colours(grid, key, scales[key], starts),
                aspect="auto",
                interpolation="nearest",
                extent=extent,
            )
            ax.set_yticks(range(n_runs), [plot_text(run.label) for run in grid.runs])
            ax.tick_params(axis="y", length=0, labelsize=8)
            ax.text(
                -0.01,
                1.0,
                METRICS[key].error_label,
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize=9,
                fontweight="bold",
            )
            last = k == len(keys) - 1
            if not last:
                ax.set_xticks([])
            else:
                ax.set_xlabel(
                    f"layer, in topological order ({n_layers} layers"
                    + (", worst of each group per pixel)" if n_layers > axes_w else ")")
                )
            cax = fig.add_axes(box(top, panel_px, LEFT + axes_w + 14, 12))
            scale = scales[key]
            bar = fig.colorbar(ScalarMappable(LogNorm(scale.lo, scale.hi), cmap), cax=cax)
            bar.set_ticks(scale.ticks(max_ticks=max(2, panel_px // 13)))
            bar.ax.tick_params(labelsize=7, length=2)
            bar.ax.minorticks_off()
            top += panel_px + GAP_PX
        return png_data_uri(fig)
