"""Procedural scenes for the embedded default dataset: stuff regions plus overlapping thing instances.

Every sample is a pure function of (seed, index), so the dataset is identical on every machine.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from segpipe.data.canonical import IMAGES_DIR, INSTANCE_DIR, SEMANTIC_DIR, Categories, Category, new_row
from segpipe.data.imageio import save_instance_map, save_label, sha256_file
from segpipe.data.instances import table_from_maps
from segpipe.params import SyntheticParams

SKY, GRASS, ROAD, DISC, BOX, TRIANGLE = range(6)
CATEGORIES = Categories(
    (
        Category(SKY, "sky", (70, 130, 180), False),
        Category(GRASS, "grass", (107, 142, 35), False),
        Category(ROAD, "road", (128, 64, 128), False),
        Category(DISC, "disc", (220, 20, 60), True),
        Category(BOX, "box", (250, 170, 30), True),
        Category(TRIANGLE, "triangle", (0, 0, 142), True),
    ),
    ignore_index=255,
)
_THING_HUES = {DISC: 0.0, BOX: 0.15, TRIANGLE: 0.75}


@dataclass
class Scene:
    """One generated sample: RGB image, class-index map and instance-id map (0 = no instance)."""

    image: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray


def _noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    return rng.normal(0.0, scale, size=shape)


def _stuff(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    wave = np.sin(xs / width * rng.uniform(2, 6) + rng.uniform(0, 6))
    horizon = height * rng.uniform(0.25, 0.5) + height * 0.05 * wave
    centre = width * rng.uniform(0.3, 0.7)
    half_bottom = width * rng.uniform(0.25, 0.45)
    depth = np.clip((ys - horizon) / np.maximum(height - horizon, 1), 0, 1)
    semantic = np.full((height, width), GRASS, dtype=np.uint8)
    semantic[np.abs(xs - centre) < half_bottom * depth] = ROAD
    semantic[ys < horizon] = SKY

    image = np.zeros((height, width, 3), dtype=np.float32)
    sky = np.stack([90 + 60 * ys / height, 140 + 50 * ys / height, np.full_like(ys, 230)], -1)
    grass = np.array([60, 140, 50], np.float32) + _noise(rng, (height, width), 28)[..., None] * [0.6, 1.0, 0.5]
    road = np.array([105, 105, 110], np.float32) + _noise(rng, (height, width), 10)[..., None]
    stripe = (np.abs(xs - centre) < 1.5 + 2 * depth) & ((ys // 6) % 2 == 0) & (semantic == ROAD)
    road[stripe] = (235, 235, 235)
    for cls, layer in ((SKY, sky + _noise(rng, (height, width), 4)[..., None]), (GRASS, grass), (ROAD, road)):
        image[semantic == cls] = layer[semantic == cls]
    return image, semantic


def _shape_mask(rng: np.random.Generator, cls: int, height: int, width: int) -> np.ndarray:
    radius = rng.uniform(0.07, 0.2) * min(height, width)
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if cls == DISC:
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=1)
    else:
        corners = 4 if cls == BOX else 3
        start = rng.uniform(0, 2 * np.pi)
        angles = start + np.arange(corners) * 2 * np.pi / corners
        draw.polygon([(cx + radius * np.cos(a), cy + radius * np.sin(a)) for a in angles], fill=1)
    return np.asarray(canvas, dtype=bool)


def _thing_texture(rng: np.random.Generator, cls: int, height: int, width: int) -> np.ndarray:
    hue = (_THING_HUES[cls] + rng.uniform(-0.06, 0.06)) % 1.0
    rgb = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)), np.float32) * 255
    texture = np.broadcast_to(rgb, (height, width, 3)).copy()
    kind = rng.integers(3)
    if kind == 1:
        ys, xs = np.mgrid[0:height, 0:width]
        period = rng.integers(4, 9)
        texture[((xs + ys) // period) % 2 == 0] *= 0.7
    elif kind == 2:
        texture += _noise(rng, (height, width), 18)[..., None]
    return texture


def generate_scene(seed: int, index: int, size: tuple[int, int], max_things: int) -> Scene:
    """Generate sample ``index`` of the dataset seeded by ``seed``; ``size`` is (height, width)."""
    rng = np.random.default_rng([seed, index])
    height, width = size
    image, semantic = _stuff(rng, height, width)
    instance = np.zeros((height, width), dtype=np.uint16)
    count = int(rng.integers(1, max_things + 1)) if max_things else 0
    for number in range(1, count + 1):
        cls = int(rng.choice(list(_THING_HUES)))
        mask = _shape_mask(rng, cls, height, width)
        image[mask] = _thing_texture(rng, cls, height, width)[mask]
        semantic[mask] = cls
        instance[mask] = number
    instance = _renumber(instance)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    return Scene(pixels, semantic, instance)


def _renumber(instance: np.ndarray) -> np.ndarray:
    """Make instance ids contiguous 1..n after occlusion removed some."""
    present = np.unique(instance)
    present = present[present > 0]
    lut = np.zeros(int(instance.max()) + 1, dtype=np.uint16)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.uint16)
    return lut[instance]


@dataclass(frozen=True)
class SyntheticSample:
    """A recipe for one generated sample; ``materialize`` writes it in the canonical layout."""

    seed: int
    index: int
    size: tuple[int, int]
    max_things: int

    def materialize(self, out_dir: Path) -> dict:
        scene = generate_scene(self.seed, self.index, self.size, self.max_things)
        sample_id = f"scene_{self.index:05d}"
        paths = {
            "image": out_dir / IMAGES_DIR / f"{sample_id}.png",
            "semantic": out_dir / SEMANTIC_DIR / f"{sample_id}.png",
            "instance": out_dir / INSTANCE_DIR / f"{sample_id}.png",
        }
        Image.fromarray(scene.image).save(paths["image"])
        save_label(scene.semantic, paths["semantic"])
        save_instance_map(scene.instance, paths["instance"])
        row = new_row(sample_id, "", f"synthetic(seed={self.seed}, index={self.index})")
        row.update({key: str(path) for key, path in paths.items()})
        row.update({"width": self.size[1], "height": self.size[0], "sha256": sha256_file(paths["image"]),
                    "instances": table_from_maps(scene.semantic, scene.instance)})
        return row


def plan(params: SyntheticParams, seed: int) -> tuple[Categories, list[SyntheticSample]]:
    """The class list and one recipe per sample of the synthetic dataset."""
    size = (int(params.size[0]), int(params.size[1]))
    return CATEGORIES, [SyntheticSample(seed, i, size, params.max_things) for i in range(params.num_samples)]
