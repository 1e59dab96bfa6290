"""Registry of report sections, one per result kind of docs/SCHEMA.md.

A section builder takes every result of its kind (plus the whole list, for cross-references such
as bisect pins shown on a compare heatmap) and returns one template context per block it wants
drawn; the block is rendered by the section's jinja2 template. Adding a result kind is one module
that calls :func:`register_section` and one template.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BuildInputs:
    """Everything a section may look at besides its own results."""

    results: list[dict[str, Any]]
    histograms: Any  # trtq.reports.histograms.HistogramSource | None


SectionFn = Callable[[list[dict[str, Any]], BuildInputs], list[dict[str, Any]]]


@dataclass(frozen=True)
class Section:
    kind: str
    title: str
    template: str
    order: int
    build: SectionFn


_SECTIONS: dict[str, Section] = {}


def register_section(kind: str, *, title: str, template: str, order: int) -> Callable[[SectionFn], SectionFn]:
    """Decorator registering a builder for results of ``kind``; ``order`` places it in the page."""

    def deco(fn: SectionFn) -> SectionFn:
        _SECTIONS[kind] = Section(kind, title, template, order, fn)
        return fn

    return deco


def known_kinds() -> list[str]:
    return sorted(_SECTIONS)


def sections_in_order() -> list[Section]:
    return sorted(_SECTIONS.values(), key=lambda s: s.order)
