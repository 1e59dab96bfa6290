"""Parse a report with the standard library's html.parser and collect what the tests check."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from html.parser import HTMLParser

from PIL import Image

URL_ATTRS = {
    "src",
    "href",
    "action",
    "formaction",
    "poster",
    "data",
    "srcset",
    "background",
    "xlink:href",
    "ping",
}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: list[str] = field(default_factory=list)


class ReportParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.stack: list[Element] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.text: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        el = Element(tag, {k: (v or "") for k, v in attrs})
        self.elements.append(el)
        if tag in ("script", "style"):
            self._in = tag
        if tag not in ("img", "meta", "br", "link", "input", "hr"):
            self.stack.append(el)

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._in = None
        while self.stack:
            el = self.stack.pop()
            if el.tag == tag:
                break

    def handle_data(self, data):
        if self._in == "script":
            self.scripts.append(data)
        elif self._in == "style":
            self.styles.append(data)
        else:
            self.text.append(data)
            for el in self.stack:
                el.text.append(data)

    def find(self, tag: str, cls: str | None = None, id: str | None = None) -> list[Element]:
        out = [e for e in self.elements if e.tag == tag]
        if cls is not None:
            out = [e for e in out if cls in e.attrs.get("class", "").split()]
        if id is not None:
            out = [e for e in out if e.attrs.get("id") == id]
        return out


def parse(html: str) -> ReportParser:
    p = ReportParser()
    p.feed(html)
    p.close()
    return p


def decode_image(uri: str) -> Image.Image:
    """Decode a data: URI image (PNG) fully; raises if it is not a valid PNG."""
    assert uri.startswith("data:image/png;base64,"), uri[:40]
    raw = base64.b64decode(uri.split(",", 1)[1], validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(raw))
    img.load()
    assert img.format == "PNG"
    return img
