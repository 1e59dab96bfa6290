"""Document images and printed text lines: the inputs the OCR models are made for.

scikit-image's ``page.png`` and ``text.png`` and pages of printed lines drawn here with OpenCV's
Hershey fonts (``cv2.putText``; seeded, so every run draws the same pages), each turned by 0, 90,
180 and 270 degrees (PP-LCNet's orientation classes), and single drawn text lines (what the
PP-OCR recogniser and direction classifier read). Shared by the benchmarks (``methods.py``'s
``docs`` metrics, ``det_flow.py``'s documents, ``in_domain.py``'s calibration data).
"""

from __future__ import annotations

import numpy as np

WORDS = (
    "quantization calibration tensor layer network model accuracy integer range scale histogram "
    "entropy percentile export engine runtime kernel batch image text line page detector the of "
    "and to in is that for with as on by"
).split()


def _fonts() -> tuple[int, ...]:
    import cv2

    return (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
            cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN)  # fmt: skip


def drawn_line(rng: np.random.Generator, words: tuple[int, int] = (2, 6)) -> np.ndarray:
    """A grayscale uint8 image of one printed line (2-5 words by default, a random Hershey font,
    size and stroke; dark ink on a light background, 5 px margins), as a detector would crop it."""
    import cv2

    fonts = _fonts()
    text = " ".join(rng.choice(WORDS, int(rng.integers(*words))))
    if rng.random() < 0.5:
        text = text.capitalize()
    font, scale, stroke = (
        fonts[int(rng.integers(len(fonts)))],
        float(rng.uniform(0.8, 1.4)),
        int(rng.integers(1, 3)),
    )
    (w, h), base = cv2.getTextSize(text, font, scale, stroke)
    img = np.full((h + base + 10, w + 10), int(rng.integers(180, 256)), np.uint8)
    cv2.putText(img, text, (5, h + 5), font, scale, int(rng.integers(0, 80)), stroke, cv2.LINE_AA)
    return img


def synthetic_page(rng: np.random.Generator) -> np.ndarray:
    """A BGR uint8 page (300-500 px a side) of dark text lines on a light background."""
    import cv2

    fonts = _fonts()
    h, w = int(rng.integers(300, 500)), int(rng.integers(300, 500))
    img = np.full((h, w, 3), int(rng.integers(200, 256)), np.uint8)
    font, scale = fonts[int(rng.integers(len(fonts)))], float(rng.uniform(0.5, 0.9))
    y = int(rng.integers(20, 40))
    while y < h - 10:
        words = " ".join(rng.choice(WORDS, int(rng.integers(3, 8))))
        ink = int(rng.integers(0, 60))
        cv2.putText(img, words, (int(rng.integers(5, 30)), y), font, scale, (ink, ink, ink), 1, cv2.LINE_AA)
        y += int(26 * scale / 0.6)
    return img


def document_images(synthetic: int = 10, seed: int = 1, real: bool = True) -> list[np.ndarray]:
    """BGR uint8 documents: page.png and text.png (``real``), then ``synthetic`` drawn pages."""
    import cv2
    from skimage import data

    out = []
    if real:
        for img in (data.page(), data.text()):
            out.append(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img[..., ::-1].copy())
    rng = np.random.default_rng(seed)
    return out + [synthetic_page(rng) for _ in range(synthetic)]


def rotations(images: list[np.ndarray]) -> list[tuple[np.ndarray, int]]:
    """Every image turned counter-clockwise by k * 90 degrees, k = 0..3: ``(image, k)``."""
    return [(np.ascontiguousarray(np.rot90(img, k)), k) for img in images for k in range(4)]
