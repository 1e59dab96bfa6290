"""What ``surgery check`` reports: one :class:`Finding` per node and reason."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Finding:
    """A node TensorRT's ONNX parser rejects (``severity="error"``) or accepts with a restriction or
    a known hazard (``"warning"``).

    ``location`` is ``"graph"`` for the main graph, ``"graph/<If node>.then_branch"`` for a
    subgraph, ``"function <domain>.<name>"`` for a local function body. ``rule`` names the
    rewrite rule of ``surgery fix`` that removes the finding, if one does. ``source`` is
    ``"table"`` (onnx-tensorrt's operator table), ``"rule"`` (a rule's own pattern) or
    ``"tensorrt"`` (the installed parser's ``supports_model``) or ``"checker"`` (the model fails
    ``onnx.checker``: node ``"(model)"``, location ``"model"``).
    """

    op_type: str
    node: str
    reason: str
    severity: str = "error"
    location: str = "graph"
    rule: str | None = None
    source: str = "table"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CheckReport:
    """All findings for one model, with where the support facts came from."""

    model: str
    findings: list[Finding] = field(default_factory=list)
    support_source: str = ""
    trt_version: str = ""
    opset: int = 0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def to_dict(self, *, created_by: str | None = None) -> dict:
        """The ``kind = "surgery-check"`` document; ``backend`` is ``"tensorrt"`` when the installed
        parser was asked (``"tensorrt <version>"``), else null (the built-in support table; no model is run)."""
        from trtq._core.result import result_document

        asked_trt = "supports_model" in self.support_source
        return result_document(
            "surgery-check",
            backend=f"tensorrt {self.trt_version}" if asked_trt else None,
            created_by=created_by,
            model=self.model,
            trt_version=self.trt_version,
            support_source=self.support_source,
            opset=self.opset,
            errors=len(self.errors),
            warnings=len(self.warnings),
            findings=[f.to_dict() for f in self.findings],
        )
