"""Procedural overhead scenes: a textured ground with objects whose category, colour, size and
position are known, so that referring expressions and their masks can be written exactly.

A scene holds several candidates, so the target can only be found by reading the expression:
distractors of other categories always, and of the same category where the expression tells them
apart by position or size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# name -> (shape, colours [(word, rgb)], half-extent range as a fraction of the image side).
# Targets cover about 5-10 % of the image: small enough to need the expression, large enough
# for a tiny model at 64 px to leave the all-background plateau within the mini budget.
Palette = list[tuple[str, tuple[int, int, int]]]


@dataclass(frozen=True)
class Kind:
    name: str  # words used in expressions
    shape: str
    colours: Palette
    size: tuple[float, float]


WHITE, GREY, RED, BLUE = ("white", (235, 235, 230)), ("grey", (150, 150, 150)), ("red", (190, 50, 40)), ("blue", (50, 80, 190))
GREEN, BROWN, BLACK, YELLOW = ("green", (60, 150, 70)), ("brown", (150, 100, 60)), ("black", (30, 30, 30)), ("yellow", (220, 200, 60))

OBJECT_KINDS = {
    "airplane": Kind("airplane", "cross", [WHITE, GREY], (0.22, 0.3)),
    "storage tank": Kind("storage tank", "circle", [WHITE, GREY], (0.12, 0.18)),
    "vehicle": Kind("vehicle", "rect_small", [RED, BLUE, BLACK, WHITE, YELLOW], (0.08, 0.12)),
    "ship": Kind("ship", "ellipse", [GREY, WHITE], (0.18, 0.26)),
    "tennis court": Kind("tennis court", "rect", [GREEN, BLUE], (0.16, 0.22)),
    "baseball field": Kind("baseball field", "diamond", [BROWN, GREEN], (0.18, 0.26)),
    "ground track field": Kind("ground track field", "ring", [RED, BROWN], (0.22, 0.3)),
    "chimney": Kind("chimney", "square", [BLACK, GREY], (0.08, 0.12)),
}

# RefSegRS-style urban tiles: categories whose masks cover every instance in the tile.
URBAN_KINDS = {
    "building": Kind("building", "square", [GREY, RED, WHITE], (0.12, 0.2)),
    "tree": Kind("tree", "circle", [("green", (30, 90, 40))], (0.06, 0.11)),
    "car": Kind("car", "rect_small", [RED, BLUE, WHITE, BLACK], (0.05, 0.07)),
    "low vegetation": Kind("low vegetation", "blob", [("green", (120, 170, 90))], (0.14, 0.22)),
}
ROAD_COLOUR = (95, 95, 100)


@dataclass
class SceneObject:
    kind: Kind
    colour: str
    mask: np.ndarray  # bool [H, W]
    centre: tuple[float, float]  # (x, y) in [0, 1]
    radius: float  # in pixels, for spacing

    @property
    def bbox(self) -> list[int]:
        """[x1, y1, x2, y2], as RRSIS-D stores it."""
        ys, xs = np.nonzero(self.mask)
        return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def ground(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth, noisy terrain: float RGB [size, size, 3] in 0..255."""
    base = np.array(rng.choice([(110, 120, 90), (140, 130, 105), (120, 125, 120), (95, 110, 85)]), float)
    field = np.zeros((size, size))
    for cells in (4, 8, 16):
        coarse = Image.fromarray(rng.normal(0, 1, (cells, cells)).astype(np.float32), mode="F")
        field += np.asarray(coarse.resize((size, size), Image.BILINEAR)) * (16 / cells)
    img = base + field[..., None] * 6 + rng.normal(0, 4, (size, size, 3))
    return img


def shape_mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Boolean mask of ``shape`` centred at pixel (cx, cy) with half-extent ``r``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    dx, dy = xx - cx, yy - cy
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # rotated coordinates
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "ring":
        d = (u / 1.0) ** 2 + (v / 0.65) ** 2
        return (d <= r**2) & (d >= (0.6 * r) ** 2)
    if shape == "ellipse":
        return (u / r) ** 2 + (v / (0.3 * r)) ** 2 <= 1
    if shape == "rect":
        return (np.abs(u) <= r) & (np.abs(v) <= 0.55 * r)
    if shape == "rect_small":
        return (np.abs(u) <= r) & (np.abs(v) <= 0.5 * r)
    if shape == "square":
        return (np.abs(u) <= r) & (np.abs(v) <= r)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= r
    if shape == "cross":
        body = (np.abs(u) <= r) & (np.abs(v) <= 0.18 * r)
        wings = (np.abs(u + 0.1 * r) <= 0.2 * r) & (np.abs(v) <= 0.9 * r)
        tail = (np.abs(u - 0.8 * r) <= 0.1 * r) & (np.abs(v) <= 0.35 * r)
        return body | wings | tail
    if shape == "blob":
        wobble = 1 + 0.25 * np.sin(3 * np.arctan2(dy, dx) + angle)
        return np.hypot(dx, dy) <= r * wobble
    raise ValueError(f"unknown shape {shape!r}")


def place(
    rng: np.random.Generator,
    size: int,
    kind: Kind,
    taken: list[SceneObject],
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
    scale: float = 1.0,
    colour: str | None = None,
) -> SceneObject | None:
    """An object of ``kind`` inside ``region`` (x0, y0, x1, y1 as fractions) not touching ``taken``."""
    r = rng.uniform(*kind.size) * size * scale
    word, rgb = next((c for c in kind.colours if c[0] == colour), None) or kind.colours[rng.integers(len(kind.colours))]
    x0, y0, x1, y1 = region
    for _ in range(60):
        cx = rng.uniform(max(x0 * size, r + 1), min(x1 * size, size - r - 1))
        cy = rng.uniform(max(y0 * size, r + 1), min(y1 * size, size - r - 1))
        if all(np.hypot(cx - o.centre[0] * size, cy - o.centre[1] * size) > r + o.radius + 2 for o in taken):
            mask = shape_mask(kind.shape, size, cx, cy, r, rng.uniform(0, np.pi))
            if mask.any():
                return SceneObject(kind, word, mask, (cx / size, cy / size), r)
    return None


def paint(img: np.ndarray, obj: SceneObject, rng: np.random.Generator) -> None:
    rgb = dict(obj.kind.colours)[obj.colour]
    shade = np.array(rgb, float) + rng.normal(0, 6, 3)
    img[obj.mask] = shade + rng.normal(0, 5, (int(obj.mask.sum()), 3))


def finish(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0, 255).round().astype(np.uint8)


def relative_side(target: SceneObject, twin: SceneObject) -> str:
    """Where ``target`` lies with respect to ``twin``: 'left', 'right', 'top' or 'bottom'."""
    dx, dy = target.centre[0] - twin.centre[0], target.centre[1] - twin.centre[1]
    if abs(dx) > abs(dy):
        return "right" if dx > 0 else "left"
    return "bottom" if dy > 0 else "top"


def twin_of(target: SceneObject, objects: list[SceneObject]) -> SceneObject:
    return next(o for o in objects if o is not target and o.kind is target.kind)


def position_word(centre: tuple[float, float]) -> str:
    """'top left', 'right', 'center', ... from a centre in [0, 1]²."""
    x, y = centre
    horiz = "left" if x < 0.4 else "right" if x > 0.6 else ""
    vert = "top" if y < 0.4 else "bottom" if y > 0.6 else ""
    return f"{vert} {horiz}".strip() or "center"


def object_scene(rng: np.random.Generator, size: int, kinds: list[str], n_distractors: int = 3):
    """A scene for RRSIS-D / RISBench: returns (image, target, objects, how) where ``how`` says which
    attribute singles out the target: 'category', 'position' or 'size'."""
    img = ground(rng, size)
    target_kind = OBJECT_KINDS[kinds[rng.integers(len(kinds))]]
    how = rng.choice(["category", "position", "size"], p=[0.5, 0.3, 0.2])
    objects: list[SceneObject] = []
    if how == "position":  # a twin on the opposite side
        left_right = rng.random() < 0.5
        halves = [(0, 0, 0.45, 1), (0.55, 0, 1, 1)] if left_right else [(0, 0, 1, 0.45), (0, 0.55, 1, 1)]
        target = place(rng, size, target_kind, objects, halves[0])
        twin = place(rng, size, target_kind, [target] if target else [], halves[1])
        if target is None or twin is None:
            return object_scene(rng, size, kinds, n_distractors)
        if rng.random() < 0.5:
            target, twin = twin, target
        objects = [target, twin]
    elif how == "size":
        target = place(rng, size, target_kind, objects, scale=1.25 if rng.random() < 0.5 else 0.6)
        twin = place(rng, size, target_kind, [target] if target else [], scale=1.0)
        if target is None or twin is None:
            return object_scene(rng, size, kinds, n_distractors)
        objects = [target, twin]
    else:
        target = place(rng, size, target_kind, objects)
        if target is None:
            return object_scene(rng, size, kinds, n_distractors)
        objects = [target]
    others = [k for k in kinds if k != target_kind.name]
    for _ in range(n_distractors):
        obj = place(rng, size, OBJECT_KINDS[others[rng.integers(len(others))]], objects)
        if obj is not None:
            objects.append(obj)
    if len(objects) < 2:  # no room for a distractor: the target would be the only candidate
        return object_scene(rng, size, kinds, n_distractors)
    for obj in objects:
        paint(img, obj, rng)
    return finish(img), target, objects, str(how)


def urban_tile(rng: np.random.Generator, size: int):
    """A RefSegRS-style tile: a road with cars, buildings, trees, vegetation.
    Returns (image, {category: union mask})."""
    img = ground(rng, size)
    masks: dict[str, np.ndarray] = {}
    yy, xx = np.mgrid[0:size, 0:size]
    width = size * rng.uniform(0.12, 0.18)
    if rng.random() < 0.5:
        road = np.abs(xx - size * rng.uniform(0.35, 0.65)) <= width / 2
    else:
        road = np.abs(yy - size * rng.uniform(0.35, 0.65)) <= width / 2
    img[road] = np.array(ROAD_COLOUR) + rng.normal(0, 4, (int(road.sum()), 3))
    masks["road"] = road
    taken: list[SceneObject] = []
    for name, count in (("building", 3), ("tree", 4), ("low vegetation", 2)):
        objs = []
        for _ in range(rng.integers(1, count + 1)):
            obj = place(rng, size, URBAN_KINDS[name], taken)
            if obj is not None and not (obj.mask & road).any():
                objs.append(obj)
                taken.append(obj)
        if objs:
            masks[name] = np.logical_or.reduce([o.mask for o in objs])
            for o in objs:
                paint(img, o, rng)
    cars = []
    for _ in range(rng.integers(1, 4)):  # cars sit on the road
        obj = place(rng, size, URBAN_KINDS["car"], cars)
        if obj is not None:
            obj.mask &= road
            if obj.mask.sum() > 4:
                cars.append(obj)
    if cars:
        masks["car"] = np.logical_or.reduce([o.mask for o in cars])
        for o in cars:
            paint(img, o, rng)
        masks["road"] = road & ~masks["car"]
    return finish(img), masks
