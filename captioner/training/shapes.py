"""Deterministic synthetic scenes: one or two coloured shapes on a plain background.

Everything a scene needs to be drawn lives in :class:`Scene` (geometry is stored as fractions of the image
side), so ``draw(scene, size)`` is a pure function and any size renders the same picture. The caption names
the shapes from left to right; shapes never share an x range, so that order is always visible in the image.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

# Shapes are saturated or dark and backgrounds pale, so a shape is darker than its background in (nearly) every
# channel. A small ViT trained from scratch stayed at chance on shape names for over a thousand steps when edges
# could have either polarity (yellow on black and black on yellow); with one polarity it learns in a few hundred.
SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 150, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 205, 20),
    "purple": (140, 50, 180),
    "orange": (245, 135, 20),
    "black": (20, 20, 20),
}
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "grey": (205, 205, 205),
    "pink": (250, 200, 215),
}
COLOURS: dict[str, tuple[int, int, int]] = {**SHAPE_COLOURS, **BACKGROUND_COLOURS}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")

DEFAULT_SIZE = 96

# Fill colours are jittered per scene so the model learns colour names, not a handful of exact RGB values.
# Backgrounds get less, because a pale grey shifted 16 per channel reads as lilac or mint to a person.
_JITTER = 16
_BACKGROUND_JITTER = 6
# Margin and gap are fractions of the image side; they keep shapes whole and separable.
_MARGIN = 0.03
_GAP = 0.04


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class PlacedShape:
    """One shape: its names plus where and how it is drawn (fractions of the image side)."""

    colour: str
    shape: str
    left: float
    top: float
    extent: float
    rotation: float
    rgb: tuple[int, int, int]

    @property
    def phrase(self) -> str:
        return f"{_article(self.colour)} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A picture's content. ``shapes`` are ordered left to right, as the caption names them."""

    shapes: tuple[PlacedShape, ...]
    background: str
    background_rgb: tuple[int, int, int]

    @property
    def caption(self) -> str:
        """Canonical caption, e.g. ``"a red circle and an orange star on a white background"``."""
        things = " and ".join(s.phrase for s in self.shapes)
        return f"{things} on {_article(self.background)} {self.background} background"


def _jitter(rng: random.Random, rgb: tuple[int, int, int], amount: int = _JITTER) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)
    return (r, g, b)


def random_scene(rng: random.Random, *, max_shapes: int = 2, min_shapes: int = 1,
                 lone_extent: tuple[float, float] = (0.3, 0.75)) -> Scene:
    """Draw a scene from ``rng``: ``min_shapes..max_shapes`` distinct shapes on a pale background.

    ``lone_extent``: the range of a lone shape's side (fractions of the image side); the video model's scenes
    use smaller shapes, which leave room to move.
    """
    if not 1 <= min_shapes <= max_shapes <= 2:
        raise ValueError(f"need 1 <= min_shapes <= max_shapes <= 2, got {min_shapes}, {max_shapes}")
    count = rng.randint(min_shapes, max_shapes)
    background = rng.choice(list(BACKGROUND_COLOURS))
    kinds: list[tuple[str, str]] = []
    while len(kinds) < count:
        kind = (rng.choice(list(SHAPE_COLOURS)), rng.choice(SHAPES))
        if kind not in kinds:
            kinds.append(kind)

    # A lone shape may fill most of the picture; two must fit side by side.
    extents = [rng.uniform(*lone_extent)] if count == 1 else [rng.uniform(0.22, 0.44) for _ in range(count)]
    # Left edges: the slack left after the shapes, the gap and the margins is split at random.
    slack = 1.0 - 2 * _MARGIN - sum(extents) - _GAP * (count - 1)
    cuts = sorted(rng.uniform(0.0, slack) for _ in range(count))
    placed: list[PlacedShape] = []
    cursor = _MARGIN
    previous_cut = 0.0
    for (colour, shape), extent, cut in zip(kinds, extents, cuts, strict=True):
        cursor += cut - previous_cut
        previous_cut = cut
        top = rng.uniform(_MARGIN, 1.0 - _MARGIN - extent)
        placed.append(
            PlacedShape(
                colour=colour,
                shape=shape,
                left=cursor,
                top=top,
                extent=extent,
                rotation=rng.uniform(-15.0, 15.0),
                rgb=_jitter(rng, COLOURS[colour]),
            )
        )
        cursor += extent + _GAP
    return Scene(
        shapes=tuple(placed),
        background=background,
        background_rgb=_jitter(rng, COLOURS[background], _BACKGROUND_JITTER),
    )


def _polygon(cx: float, cy: float, radii: list[float], rotation: float, start: float) -> list[tuple[float, float]]:
    step = 2 * math.pi / len(radii)
    base = math.radians(rotation) + start
    return [(cx + r * math.cos(base + i * step), cy + r * math.sin(base + i * step)) for i, r in enumerate(radii)]


def _cross(cx: float, cy: float, half: float, rotation: float) -> list[tuple[float, float]]:
    arm = half / 3
    outline = [
        (-arm, -half), (arm, -half), (arm, -arm), (half, -arm), (half, arm), (arm, arm),
        (arm, half), (-arm, half), (-arm, arm), (-half, arm), (-half, -arm), (-arm, -arm),
    ]  # fmt: skip
    cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in outline]


def _draw_shape(canvas: ImageDraw.ImageDraw, item: PlacedShape, size: int, fill: tuple[int, int, int] | int) -> None:
    half = item.extent * size / 2
    cx = (item.left + item.extent / 2) * size
    cy = (item.top + item.extent / 2) * size
    if item.shape == "circle":
        canvas.ellipse((cx - half, cy - half, cx + half, cy + half), fill=fill)
    elif item.shape == "square":
        # A rotated square's corners reach half*sqrt(2); shrink so it stays inside its box.
        turn = math.radians(item.rotation)
        radius = half * math.sqrt(2) / (abs(math.cos(turn)) + abs(math.sin(turn)))
        canvas.polygon(_polygon(cx, cy, [radius] * 4, item.rotation, math.pi / 4), fill=fill)
    elif item.shape == "triangle":
        canvas.polygon(_polygon(cx, cy + half * 0.15, [half] * 3, item.rotation, -math.pi / 2), fill=fill)
    elif item.shape == "star":
        canvas.polygon(_polygon(cx, cy, [half, half * 0.45] * 5, item.rotation, -math.pi / 2), fill=fill)
    elif item.shape == "cross":
        canvas.polygon(_cross(cx, cy, half, item.rotation), fill=fill)
    else:
        raise ValueError(f"unknown shape {item.shape!r}")


def draw(scene: Scene, size: int = DEFAULT_SIZE) -> Image.Image:
    """Render ``scene`` as a ``size`` x ``size`` RGB image."""
    image = Image.new("RGB", (size, size), scene.background_rgb)
    canvas = ImageDraw.Draw(image)
    for item in scene.shapes:
        _draw_shape(canvas, item, size, item.rgb)
    return image


def shape_mask(scene: Scene, size: int) -> Image.Image:
    """Mode "L" mask of ``scene``: 0 where the background shows, else 1 + the shape's index in ``SHAPES``."""
    mask = Image.new("L", (size, size), 0)
    canvas = ImageDraw.Draw(mask)
    for item in scene.shapes:
        _draw_shape(canvas, item, size, 1 + SHAPES.index(item.shape))
    return mask


def make_example(seed: int, *, max_shapes: int = 2, size: int = DEFAULT_SIZE) -> tuple[Image.Image, Scene]:
    """The image and scene for ``seed``: the same seed always gives the same picture."""
    scene = random_scene(random.Random(seed), max_shapes=max_shapes)
    return draw(scene, size), scene


def scene_with(seed: int, shapes: int) -> Scene:
    """The scene for ``seed`` with exactly ``shapes`` shapes (held-out sets fix the count, training does not)."""
    return random_scene(random.Random(seed), min_shapes=shapes, max_shapes=shapes)
