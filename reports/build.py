"""Assemble a self-contained HTML report from result dicts (docs/SCHEMA.md) with jinja2.

The page has one summary block and then one section per result kind (compare, bisect, calib),
each drawn by its registered builder (:mod:`trtq.reports.sections`) and template. Guarantees:

- self-contained: CSS and the sorting script are inline, figures are PNG ``data:`` URIs, and a
  Content-Security-Policy forbids every network request (``default-src 'none'``); the only
  script allowed to run is the table sorter, by its SHA-256;
- readable without JavaScript: all content is static HTML; the script only sorts tables;
- every string taken from a result (model, node and tensor names, paths) is HTML-escaped by
  jinja2's autoescape;
- deterministic: no timestamps, sorted iteration, PNGs without metadata; the same inputs give
  the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from trtq._core.atomic import atomic_write_text
from trtq._core.errors import InputError
from trtq._core.result import SCHEMA_VERSION
from trtq.reports import bisect_section, calib_section, compare_section, quantize_section  # noqa: F401  (register sections)
from trtq.reports.colours import MISSING_COLOUR, NONFINITE_COLOUR, PINNED_COLOUR, level_colours
from trtq.reports.histograms import as_histograms
from trtq.reports.sections import BuildInputs, known_kinds, sections_in_order
from trtq.reports.summary import summary_cards

_TEMPLATE_DIR = Path(__file__).parent  # templates ship as package data beside this file


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATE_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def validate_result(result: Any, where: str) -> dict[str, Any]:
    """Check the envelope of one result (``kind``, ``schema``); raise :class:`InputError` naming
    ``where`` otherwise. Fields inside are read leniently: missing ones show as "—"."""
    if not isinstance(result, dict):
        raise InputError(f"{where}: expected a JSON object with a 'kind', got {type(result).__name__}")
    kind = result.get("kind")
    if kind is None:
        raise InputError(
            f"{where}: not a trtq result (no 'kind'; expected one of {', '.join(known_kinds())})"
        )
    if kind not in known_kinds():
        raise InputError(f"{where}: unknown result kind {kind!r}; expected one of {', '.join(known_kinds())}")
    schema = result.get("schema", SCHEMA_VERSION)
    if not isinstance(schema, int) or schema > SCHEMA_VERSION or schema < 1:
        raise InputError(
            f"{where}: result schema {schema!r} is not supported (this trtq reads schema {SCHEMA_VERSION})"
        )
    return result


def _label(result: dict[str, Any], n: int) -> str:
    model = Path(str((result.get("model") or {}).get("path") or "model")).name
    return f"#{n} {result.get('kind')} · {model}"


#: The list each result kind's section reads. It may be missing (the report shows "—"), but not
#: something else.
LIST_FIELDS = {"calib": "tensors", "compare": "runs"}


def _checked_fields(result: dict[str, Any], where: str) -> dict[str, Any]:
    field = LIST_FIELDS.get(str(result.get("kind")))
    if field and result.get(field) is not None and not isinstance(result[field], list):
        raise InputError(f"{where}: '{field}' of a {result['kind']} result must be a list")
    return result


def _histograms_match(results: list[dict[str, Any]], hists: Mapping[str, Any], given: Any) -> None:
    """Histograms given for calib results must be theirs: at least half of their tensors in it."""
    names = {
        str(t.get("name"))
        for r in results
        if r.get("kind") == "calib"
        for t in r.get("tensors") or []
        if isinstance(t, dict)
    }
    if given is not None and hists and names and 2 * len(names & set(hists)) < len(names):
        raise InputError(f"{given}: most calib result tensors have no histogram in it: another model's?")


def _blocks(results: list[dict[str, Any]], inputs: Any) -> list[dict[str, Any]]:
    blocks = []
    for section in sections_in_order():
        mine = [r for r in results if r.get("kind") == section.kind]
        if mine:
            blocks.append(
                {
                    "kind": section.kind,
                    "title": section.title,
                    "template": section.template,
                    "items": section.build(mine, inputs),
                }
            )
    return blocks


def build_report(
    results: list[dict[str, Any]],
    *,
    histograms: Mapping[str, Any] | str | os.PathLike | None = None,
    title: str | None = None,
    sources: list[str] | None = None,
) -> str:
    """Return the HTML text of a report on ``results`` (dicts of kind calib/compare/bisect).

    ``histograms`` maps tensor name -> ``(counts, upper)`` (see :mod:`trtq.reports.histograms`)
    or is a path to the calibration ``.npz``; without it a calib result's own ``histograms``
    path is used when that file exists. Raises :class:`InputError` for a result that is not a
    trtq result or is malformed, naming it by ``sources`` (its file) when given.
    """
    if not isinstance(results, list | tuple) or not results:
        raise InputError("no results to report on")
    where = list(sources) if sources else [f"result {i + 1}" for i in range(len(results))]
    results = [_checked_fields(validate_result(r, w), w) for r, w in zip(results, where, strict=True)]
    inputs = BuildInputs(results, as_histograms(histograms))
    _histograms_match(results, inputs.histograms, histograms)
    try:
        labels = [_label(r, i + 1) for i, r in enumerate(results)]
        blocks = _blocks(results, inputs)
    except (AttributeError, TypeError, KeyError, ValueError, IndexError) as exc:
        for r, w in zip(results, where, strict=True):  # which file: build each alone
            try:
                _label(r, 1)
                _blocks([r], inputs)
            except (AttributeError, TypeError, KeyError, ValueError, IndexError) as one:
                raise InputError(
                    f"{w}: malformed {r.get('kind')} result ({type(one).__name__}: {one})"
                ) from one
        raise InputError(f"malformed results ({type(exc).__name__}: {exc})") from exc
    models = sorted({Path(str((r.get("model") or {}).get("path") or "")).name for r in results} - {""})
    env = _environment()
    script = env.get_template("sort_table.js.j2").render().strip()
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    csp = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    return env.get_template("report.html.j2").render(
        title=title or ("trtq report — " + ", ".join(models) if models else "trtq report"),
        csp=csp,
        script=Markup(script),
        levels=level_colours(),
        nonfinite_colour=NONFINITE_COLOUR,
        missing_colour=MISSING_COLOUR,
        pinned_colour=PINNED_COLOUR,
        cards=summary_cards(results, labels),
        blocks=blocks,
    )


def write_report(
    path: str | os.PathLike,
    results: list[dict[str, Any]],
    *,
    histograms: Mapping[str, Any] | str | os.PathLike | None = None,
    title: str | None = None,
    sources: list[str] | None = None,
) -> None:
    """Build the report and write it to ``path`` atomically (UTF-8)."""
    atomic_write_text(path, build_report(results, histograms=histograms, title=title, sources=sources))
