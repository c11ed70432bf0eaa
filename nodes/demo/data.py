"""The demo model's procedural dataset: coloured shapes on plain backgrounds, with captions.

Every sample is a pure function of (split, index), so training, the report and the
tests see the same pictures on every machine; nothing is downloaded.

A picture is 64×64 RGB with one or two upright shapes (circle, square, triangle,
star), each one of 8 colours, on one of 4 background colours. The two palettes are
disjoint, so a shape never has its background's colour. Two shapes sit side by
side and the caption names them left to right:
"a red circle and a blue square on a white background".

Generalisation is measured on combinations training never sees: a fixed set of
(colour, shape, background) triples is held out. Training pictures contain none of
them; every held-out picture contains at least one.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

SIZE = 64
SEED = 20261123

# Names are single caption words; values are sRGB. Chosen far apart from each other and from the backgrounds.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (240, 225, 30),
    "green": (30, 170, 50),
    "cyan": (0, 200, 210),
    "blue": (30, 60, 220),
    "purple": (140, 40, 190),
    "pink": (255, 120, 200),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
    "brown": (110, 70, 35),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")

STAR_INNER_RATIO = 0.45  # inner / outer radius; a deep star keeps its points through blur
SUPERSAMPLE = 2  # coverage is averaged over SUPERSAMPLE² points per pixel: antialiased edges

SINGLE_SIZES = (20, 40)  # a shape's extent in pixels, [low, high)
PAIR_SIZES = (16, 28)
SINGLE_SHAPE_FRACTION = 0.5

TRAIN, HELDOUT = "train", "heldout"


@dataclasses.dataclass(frozen=True)
class Shape:
    colour: str
    kind: str
    cx: float  # centre, in pixels
    cy: float
    size: float  # extent of the shape's box, in pixels


@dataclasses.dataclass(frozen=True)
class Sample:
    image: np.ndarray  # (SIZE, SIZE, 3) uint8
    masks: np.ndarray  # (len(shapes), SIZE, SIZE) float32 coverage in [0, 1], drawing order
    shapes: tuple[Shape, ...]  # left to right
    background: str
    caption: str


def is_heldout(colour: str, kind: str, background: str) -> bool:
    """Whether training never sees this (colour, shape, background) triple.

    A fixed modular pattern: each (shape, background) pair holds out one colour, 16 of
    the 128 triples in all, two per colour, and at most one per (colour, shape) and per
    (colour, background) pair, so training still sees every colour on every shape and
    on every background.
    """
    c, s, b = list(COLOURS).index(colour), SHAPES.index(kind), list(BACKGROUNDS).index(background)
    return c == (s + 2 * b + 3) % len(COLOURS)


def heldout_triples() -> list[tuple[str, str, str]]:
    return [(c, s, b) for c in COLOURS for s in SHAPES for b in BACKGROUNDS if is_heldout(c, s, b)]


def caption(shapes: tuple[Shape, ...], background: str) -> str:
    named = " and ".join(f"{_article(shape.colour)} {shape.colour} {shape.kind}" for shape in shapes)
    return f"{named} on a {background} background"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def vocabulary() -> list[str]:
    """Every word a caption can contain."""
    return sorted({"a", "an", "and", "on", "background", *COLOURS, *BACKGROUNDS, *SHAPES})


def sample(split: str, index: int) -> Sample:
    """Picture `index` of `split` (TRAIN or HELDOUT); the same on every call."""
    rng = np.random.default_rng([SEED, (TRAIN, HELDOUT).index(split), index])
    shapes, background = _layout(rng, split)
    return render(shapes, background)


def samples(split: str, start: int, count: int) -> list[Sample]:
    return [sample(split, i) for i in range(start, start + count)]


def batch(split: str, start: int, count: int) -> tuple[np.ndarray, list[str]]:
    """Images (count, SIZE, SIZE, 3) uint8 and captions of pictures start..start+count-1."""
    drawn = samples(split, start, count)
    return np.stack([s.image for s in drawn]), [s.caption for s in drawn]


def render(shapes: tuple[Shape, ...], background: str) -> Sample:
    """Draw `shapes` over a plain `background`; later shapes cover earlier ones."""
    masks = np.stack([shape_mask(shape) for shape in shapes])
    image = np.broadcast_to(np.array(BACKGROUNDS[background], np.float32), (SIZE, SIZE, 3))
    for shape, mask in zip(shapes, masks):
        image = image + mask[..., None] * (np.array(COLOURS[shape.colour], np.float32) - image)
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Sample(pixels, masks, shapes, background, caption(shapes, background))


# ---- layout ------------------------------------------------------------------------------------


def _layout(rng: np.random.Generator, split: str) -> tuple[tuple[Shape, ...], str]:
    """Draw shapes and a background until the picture belongs to `split`."""
    while True:
        background = str(rng.choice(list(BACKGROUNDS)))
        if rng.random() < SINGLE_SHAPE_FRACTION:
            shapes = (_shape(rng, SINGLE_SIZES, x_range=(0, SIZE)),)
        else:
            half = SIZE / 2
            shapes = (_shape(rng, PAIR_SIZES, x_range=(0, half)), _shape(rng, PAIR_SIZES, x_range=(half, SIZE)))
        heldout = any(is_heldout(s.colour, s.kind, background) for s in shapes)
        if heldout == (split == HELDOUT):
            return shapes, background


def _shape(rng: np.random.Generator, sizes: tuple[int, int], x_range: tuple[float, float]) -> Shape:
    size = float(rng.uniform(*sizes))
    margin = size / 2 + 1  # the whole shape stays inside its range
    cx = float(rng.uniform(x_range[0] + margin, x_range[1] - margin))
    cy = float(rng.uniform(margin, SIZE - margin))
    return Shape(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), cx, cy, size)


# ---- masks -------------------------------------------------------------------------------------


@functools.cache
def _sample_points() -> tuple[np.ndarray, np.ndarray]:
    """x and y of SUPERSAMPLE² points inside each pixel, shaped (SIZE, SIZE, SUPERSAMPLE²)."""
    offsets = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    sub_x, sub_y = np.meshgrid(offsets, offsets)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    return x[..., None] + sub_x.ravel(), y[..., None] + sub_y.ravel()


def shape_mask(shape: Shape) -> np.ndarray:
    """Coverage of each pixel by `shape`, (SIZE, SIZE) float32 in [0, 1]."""
    x, y = _sample_points()
    dx, dy, r = x - shape.cx, y - shape.cy, shape.size / 2
    if shape.kind == "circle":
        inside = dx * dx + dy * dy <= r * r
    elif shape.kind == "square":
        inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    else:
        inside = _inside_polygon(dx, dy, _polygon(shape.kind, r))
    return inside.mean(axis=-1, dtype=np.float32)


def _polygon(kind: str, r: float) -> np.ndarray:
    """Vertices (n, 2) around the origin, in image coordinates (y down), pointing up."""
    if kind == "triangle":  # as wide as it is high
        return np.array([(0.0, -r), (r, r), (-r, r)])
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5  # a five-pointed star: outer and inner points alternate
    radii = np.where(np.arange(10) % 2 == 0, r, r * STAR_INNER_RATIO)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _inside_polygon(x: np.ndarray, y: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule: count the polygon edges a ray to the right of each point crosses."""
    inside = np.zeros(x.shape, bool)
    for (x0, y0), (x1, y1) in zip(vertices, np.roll(vertices, -1, axis=0)):
        if y0 == y1:
            continue
        spans = (y0 <= y) != (y1 <= y)
        crossing_x = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= spans & (x < crossing_x)
    return inside
