"""``surgery fix`` end to end: load, rewrite, verify with ONNX Runtime, save atomically.

Steps, in order: load the model (one-line errors for bad files or missing external data); make
sure ONNX Runtime can run the original (else there is nothing to verify against); rewrite with the
verifiable rules to a fixed point; compare outputs with the original on random inputs
(:mod:`trtq.surgery.verify`), refusing to write if any output changed; then apply the rules
ONNX Runtime cannot run (plugin mapping); validate with ``onnx.checker`` and shape inference;
save with :func:`trtq._core.onnx_model.save_onnx` (atomic). Nothing is written on any failure.
Finally the written model is checked against the support table again: every node the parser
would still reject is listed in :attr:`FixReport.remaining` with the reason no rule removed it
(the CLI then exits 1 unless ``--allow-unfixed``; the improved model is written all the same).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from trtq._core.errors import CheckFailed, InputError
from trtq._core.onnx_model import load_onnx, save_onnx
from trtq._core.progress import ProgressFn, null_progress
from trtq.surgery.check import model_opset
from trtq.surgery.findings import Finding
from trtq.surgery.fix import FixResult, fix_model, validate
from trtq.surgery.rule import make_rules
from trtq.surgery.verify import VerifyResult, check_runs, verify_models


@dataclass
class FixReport:
    model: str
    output: str | None
    fix: FixResult
    verify: VerifyResult | None = None
    written: bool = False
    notes: list[str] = field(default_factory=list)
    #: Nodes of the result the parser still rejects: node, op, domain, location, reason, why
    #: (why no rule removed it).
    remaining: list[dict] = field(default_factory=list)

    def to_dict(self, *, created_by: str | None = None) -> dict:
        """The ``kind = "surgery-fix"`` document; ``backend`` is ``"onnxruntime"`` when the rewrite
        was verified on it, else null."""
        from trtq._core.result import result_document

        return result_document(
            "surgery-fix",
            backend=None if self.verify is None else "onnxruntime",
            created_by=created_by,
            model=self.model,
            output=self.output,
            written=self.written,
            **self.fix.to_dict(),
            verify=None if self.verify is None else self.verify.to_dict(),
            unverified_rules=self.fix.unverifiable,
            notes=self.notes,
            remaining=self.remaining,
        )


def fix_file(
    model_path: str | os.PathLike,
    output: str | os.PathLike | None,
    *,
    rules: list[str] | None = None,
    plugins: dict[str, tuple[str, str]] | None = None,
    verify: bool = True,
    shapes: dict[str, tuple[int, ...]] | None = None,
    trials: int = 3,
    inplace: bool = False,
    dry_run: bool = False,
    progress: ProgressFn = null_progress,
) -> FixReport:
    """Fix ``model_path`` and write ``output`` (or the input itself with ``inplace``)."""
    src = Path(model_path)
    if inplace:
        if output is not None and Path(output).resolve() != src.resolve():
            raise InputError("--inplace and -o name different files; give one of them")
        output = src
    elif output is None and not dry_run:
        raise InputError("no output: give -o OUT.onnx, or --inplace to overwrite the input")
    elif (
        output is not None
        and src.exists()
        and Path(output).exists()
        and Path(output).resolve() == src.resolve()
    ):
        raise InputError(f"{output}: refusing to overwrite the input; use --inplace")
    model = load_onnx(src)
    invalid_note = None
    try:  # the output must pass these; a model that does not pass them to begin with is bad input
        validate(model, what=str(src))
    except CheckFailed as exc:
        if not _deprecated_upsample(model):
            raise InputError(str(exc)) from exc
        # The one invalid input a rule repairs: nothing can run the original to verify against.
        verify = False
        invalid_note = (
            f"{src} is not valid ONNX (Upsample is deprecated at opset {model_opset(model)}) and ONNX "
            "Runtime cannot run it: outputs not verified (upsample_to_resize is proven in the test suite)"
        )
    if plugins and rules is not None and "plugin_mapping" not in rules:
        rules = [*rules, "plugin_mapping"]  # plugins given: they are applied whatever rules were chosen
    selected = make_rules(rules, plugins=plugins or {})
    plain = [r for r in selected if r.verifiable]
    # Plugin mapping is the only rule ONNX Runtime cannot check; without plugins it has nothing to do.
    later = [r for r in selected if not r.verifiable] if plugins else []
    # Fail early, with one line, on a model ONNX Runtime cannot run; keep its session as the reference.
    reference = check_runs(model, shapes=shapes, name=str(src)) if verify else None
    result = fix_model(model, plain, progress=progress)
    report = FixReport(str(src), None if output is None else str(output), result)
    if verify and result.changed:
        report.verify = verify_models(
            model, result.model, shapes=shapes, trials=trials, name=str(src), reference=reference
        )
        if not report.verify.ok:
            worst = report.verify.worst()
            raise CheckFailed(
                f"{src}: rewritten model changes output {worst.name!r} (relative error {worst.rel:.3g}); nothing written"
            )
    elif invalid_note:
        report.notes.append(invalid_note)
    elif not verify:
        report.notes.append("verification skipped (--no-verify)")
    if later:
        extra = fix_model(result.model, later, progress=progress)
        result.changes.update(extra.changes)
        result.model = extra.model
        result.unverifiable = extra.unverifiable
        if extra.unverifiable:
            report.notes.append(
                f"{', '.join(extra.unverifiable)}: plugin nodes cannot run in ONNX Runtime; not verified"
            )
    report.remaining = remaining_rejections(result.model)
    # fix_model has validated result.model (onnx.checker and strict shape inference)
    if output is not None and not dry_run:
        save_onnx(result.model, output)
        report.written = True
    return report


def _deprecated_upsample(model) -> bool:
    """The model's opset deprecates Upsample and it has Upsample nodes (upsample_to_resize's case)."""
    from trtq.surgery.rules.upsample_to_resize import DEPRECATED_SINCE

    return model_opset(model) >= DEPRECATED_SINCE and any(
        n.op_type == "Upsample" and n.domain in ("", "ai.onnx") for n in model.graph.node
    )


def remaining_rejections(model) -> list[dict]:
    """Error findings of the support table on ``model``, each with why no rule removed it."""
    from trtq.surgery.check import check_model
    from trtq.surgery.rewrite_status import why_no_rule

    domains = {n.name: n.domain for n in model.graph.node}
    out = []
    for f in check_model(model, rules=[]).errors:
        domain = domains.get(f.node, "") if f.location == "graph" else ""
        out.append(_remaining(f, domain, why_no_rule(f.op_type, domain) if f.op_type not in _NOT_OPS else ""))
    return out


_NOT_OPS = frozenset({"model", "input", "output"})  # findings about the model, not a node


def _remaining(f: Finding, domain: str, why: str) -> dict:
    return {
        "node": f.node,
        "op": f.op_type,
        "domain": domain,
        "location": f.location,
        "reason": f.reason,
        "why": why or "no rule changes the model's interface or opset",
    }
