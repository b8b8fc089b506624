"""Captioned whole scenes for pretraining the tiny backbones (``diffris pretrain-backbone``).

The images come from the same procedural generator as the synthetic datasets
(:mod:`diffris.data.scenes`), drawn from a seed stream of their own, and each caption describes
the *whole* scene, the way an alt-text describes a web image: every object's colour and category,
counts of repeated categories, and the coarse place of each object. No caption is a referring
expression: none singles out one object against its twins, and none is written by the dataset
writers' expression functions. docs/pretraining.md gives the no-leakage argument.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from PIL import Image

from diffris.data import scenes

STREAM = 8_000  # entropy word that no dataset split uses (they use [seed, dataset 0-2, split 0-2])
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five"}


def pretraining_rng(seed: int) -> np.random.Generator:
    """The pretraining images' random stream, disjoint from every dataset split's."""
    return np.random.default_rng([seed, STREAM])


def _plural(name: str, count: int) -> str:
    return name if count == 1 else f"{NUMBERS.get(count, 'many')} {name}s"


def describe_objects(objects: list[scenes.SceneObject]) -> str:
    """'a white airplane at the top left, two grey storage tanks and a red vehicle at the center':
    objects in order of size, repeated categories counted (short enough for 32 tokens)."""
    ordered = sorted(objects, key=lambda o: -o.radius)
    counts = Counter(o.kind.name for o in ordered)
    parts, seen = [], set()
    for obj in ordered:
        name = obj.kind.name
        if name in seen:
            continue
        seen.add(name)
        if counts[name] > 1:
            colours = {o.colour for o in ordered if o.kind.name == name}
            colour = f"{colours.pop()} " if len(colours) == 1 else ""
            parts.append(f"{_plural(colour + name, counts[name])}")
        else:
            parts.append(f"a {obj.colour} {name} at the {scenes.position_word(obj.centre)}")
    listed = ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else parts[0]
    return listed


def describe_urban(masks: dict[str, np.ndarray]) -> str:
    """'an urban tile with a road, cars, buildings and trees': the categories present."""
    names = {"road": "a road", "car": "cars", "building": "buildings", "tree": "trees", "low vegetation": "low vegetation"}
    present = [names[c] for c in names if c in masks and masks[c].any()]
    listed = ", ".join(present[:-1]) + f" and {present[-1]}" if len(present) > 1 else present[0]
    return f"an urban tile with {listed}"


def captioned_scene(rng: np.random.Generator, raw_size: int, size: int, urban_fraction: float) -> tuple[np.ndarray, str]:
    """One scene at ``raw_size`` (as the dataset writers draw it), resized bilinearly to ``size``
    (as ``diffris prepare`` does), and its caption."""
    if rng.random() < urban_fraction:
        image, masks = scenes.urban_tile(rng, raw_size)
        caption = describe_urban(masks)
    else:
        image, _, objects, _ = scenes.object_scene(rng, raw_size, list(scenes.OBJECT_KINDS))
        caption = describe_objects(objects)
    if raw_size != size:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    return image, caption


def captioned_scenes(
    count: int, seed: int, raw_size: int, size: int, urban_fraction: float
) -> tuple[np.ndarray, list[str]]:
    """``count`` images (uint8 [N, size, size, 3]) and captions, deterministic for ``seed``."""
    if count < 1:
        raise ValueError(f"need at least one pretraining image, got {count}")
    rng = pretraining_rng(seed)
    pairs = [captioned_scene(rng, raw_size, size, urban_fraction) for _ in range(count)]
    return np.stack([p[0] for p in pairs]), [p[1] for p in pairs]
