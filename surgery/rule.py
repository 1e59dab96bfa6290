"""The rewrite-rule protocol and its registry.

A rule is a small class in ``trtq/surgery/rules/<name>.py``, registered with
:func:`register_rule`. ``match(graph)`` only reads the onnx-graphsurgeon graph and returns
:class:`Match` objects; ``rewrite(graph, nodes, match)`` rewrites one match in place and returns
whether it changed anything. ``apply(graph, match)``, which the fix pass calls, looks the match's
nodes up and skips a match whose nodes are gone (an earlier rewrite consumed them); rules whose
rewrite is graph-wide override ``apply`` itself. Applying a rule to its own output finds nothing
more to do (idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import onnx_graphsurgeon as gs

from trtq._core.errors import InputError
from trtq.surgery.graph_util import nodes_present


@dataclass(frozen=True)
class Match:
    """One place a rule can rewrite.

    ``nodes`` are the names of the nodes the rewrite replaces; ``nodes[0]`` is the node that
    ``surgery check`` reports. ``reason`` says, in one line, why the pattern matters for TensorRT.
    ``data`` carries what ``rewrite`` needs (values computed during matching).
    """

    rule: str
    nodes: tuple[str, ...]
    op_type: str
    reason: str
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class Rule:
    """Base class of rewrite rules: subclasses set ``name``/``summary`` and implement ``match`` and
    ``rewrite`` (or ``apply``).

    ``reports`` says whether ``surgery check`` lists this rule's matches on their own (a pattern
    worth fixing even though the parser accepts it, e.g. a decomposed LayerNorm that overflows in
    FP16). Rules with ``reports = False`` are only named as the fix for findings of the support table.
    ``order`` sets the position in a fix pass (lower runs first). ``rewrites`` lists the op types
    whose parser rejection (or restriction) the rule removes; :mod:`trtq.surgery.rewrite_status`
    derives its per-operator table from it, so the table cannot drift from the registered rules.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    reports: ClassVar[bool] = False
    order: ClassVar[int] = 50
    #: False for rules whose result ONNX Runtime cannot run (TensorRT plugin nodes).
    verifiable: ClassVar[bool] = True
    #: Keyword options of the constructor that :func:`make_rules` passes through.
    options: ClassVar[tuple[str, ...]] = ()
    #: ONNX op types this rule rewrites away (or out of a parser restriction); () for graph-wide
    #: rules that are not about one op type (function inlining, user plugin mapping).
    rewrites: ClassVar[tuple[str, ...]] = ()

    def match(self, graph: gs.Graph) -> list[Match]:
        raise NotImplementedError

    def apply(self, graph: gs.Graph, match: Match) -> bool:
        """Rewrite ``match`` if its nodes are all still in ``graph`` (else: False, nothing done)."""
        nodes = nodes_present(graph, match.nodes)
        return False if nodes is None else self.rewrite(graph, nodes, match)

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        """Rewrite one match whose nodes are ``found`` (in ``match.nodes`` order)."""
        raise NotImplementedError

    def _match(self, nodes: list[gs.Node] | tuple[gs.Node, ...], reason: str, **data: Any) -> Match:
        return Match(self.name, tuple(n.name for n in nodes), nodes[0].op, reason, dict(data))


_REGISTRY: dict[str, type[Rule]] = {}


def register_rule(cls: type[Rule]) -> type[Rule]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"rule {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin_rules() -> None:
    import trtq.surgery.rules  # noqa: F401  (imports every rule module, which registers it)


def rule_names() -> list[str]:
    """Registered rule names in fix order."""
    _load_builtin_rules()
    return [c.name for c in sorted(_REGISTRY.values(), key=lambda c: (c.order, c.name))]


def rule_class(name: str) -> type[Rule]:
    """The class registered as ``name``; an unknown name raises :class:`InputError` listing the choices."""
    _load_builtin_rules()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown rule {name!r}; choices: {', '.join(rule_names())}") from None


def make_rules(names: list[str] | None = None, **options: Any) -> list[Rule]:
    """Instantiate rules (all when ``names`` is None) in fix order.

    ``options`` are passed to rules whose constructor accepts them by keyword (e.g. ``plugins``).
    """
    wanted = rule_names() if names is None else [rule_class(n).name for n in names]
    rules = []
    for name in rule_names():
        if name in wanted:
            cls = _REGISTRY[name]
            accepted = getattr(cls, "options", ())
            rules.append(cls(**{k: v for k, v in options.items() if k in accepted}))
    return rules
