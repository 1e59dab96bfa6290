"""Unsupported op -> a TensorRT plugin node, by the user's mapping ``OpType=PluginName[:version]``.

The node keeps its inputs, outputs and attributes; its op type becomes the plugin name in the
``trt.plugins`` domain with ``plugin_version`` (default "1") and ``plugin_namespace`` ("")
attributes, which TensorRT's ONNX parser uses to look the creator up in its plugin registry. The
plugin must be registered at build time (``trtexec --staticPlugins=...`` or loading its library).
ONNX Runtime cannot run plugin nodes, so this rule's result is not verified (``verifiable``).
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx_graphsurgeon as gs

from trtq._core.errors import InputError
from trtq.surgery.rule import Match, Rule, register_rule

PLUGIN_DOMAIN = "trt.plugins"


def parse_plugin_specs(specs: list[str] | tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """``["OpType=Plugin[:version]", ...]`` -> ``{OpType: (Plugin, version)}``."""
    out = {}
    for spec in specs:
        op, sep, plugin = spec.partition("=")
        if not sep or not op.strip() or not plugin.strip():
            raise InputError(f"--plugin {spec!r}: expected OpType=PluginName[:version]")
        name, _, version = plugin.strip().partition(":")
        out[op.strip()] = (name, version or "1")
    return out


@register_rule
class PluginMapping(Rule):
    name = "plugin_mapping"
    summary = "an unsupported op -> a TensorRT plugin node (needs --plugin OpType=PluginName)"
    order = 100
    verifiable = False
    options = ("plugins",)

    def __init__(self, plugins: Mapping[str, tuple[str, str]] | None = None) -> None:
        self.plugins = dict(plugins or {})

    def match(self, graph: gs.Graph) -> list[Match]:
        return [
            self._match([n], f"mapped to TensorRT plugin {self.plugins[n.op][0]}")
            for n in graph.nodes
            if n.op in self.plugins and (n.domain or "") != PLUGIN_DOMAIN
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        node = found[0]
        plugin, version = self.plugins[node.op]
        node.op = plugin
        node.domain = PLUGIN_DOMAIN
        node.attrs.setdefault("plugin_version", version)
        node.attrs.setdefault("plugin_namespace", "")
        return True
