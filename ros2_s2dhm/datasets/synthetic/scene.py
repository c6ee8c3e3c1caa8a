"""A textured 3D street with known geometry, made of planar rectangles ("quads").

World frame: x along the street, y to the left, z up (metres); the ground is z = 0. The road
spans |y| <= ``road_half_width``, sidewalks reach the facades at |y| = ``street_half_width``.
Buildings of random width and height line both sides; parked cars, kiosks, bins and lamp posts
are boxes. Everything is deterministic for a given seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import textures


@dataclass
class Quad:
    """A textured rectangle ``origin + a * edge_u + b * edge_v`` for a, b in [0, 1].

    ``texture`` [H, W, 5] float32 (see :mod:`textures`): column index grows with ``a``, row
    index grows with ``1 - b`` (row 0 at ``b = 1``). ``mips`` is its 2x2-box-filtered pyramid (texel j
of level k covers texels [j 2^k, (j + 1) 2^k) of level 0).
    """

    origin: np.ndarray
    edge_u: np.ndarray
    edge_v: np.ndarray
    texture: np.ndarray
    kind: str = "facade"
    normal: np.ndarray = field(init=False)
    mips: list = field(init=False, repr=False)

    def __post_init__(self):
        self.origin = np.asarray(self.origin, np.float64)
        self.edge_u = np.asarray(self.edge_u, np.float64)
        self.edge_v = np.asarray(self.edge_v, np.float64)
        n = np.cross(self.edge_u, self.edge_v)
        self.normal = n / np.linalg.norm(n)
        self.mips = [self.texture]
        while min(self.mips[-1].shape[:2]) >= 4 and len(self.mips) < 8:
            m = self.mips[-1]
            h, w = m.shape[0] // 2 * 2, m.shape[1] // 2 * 2
            self.mips.append(0.25 * (m[0:h:2, 0:w:2] + m[1:h:2, 0:w:2] + m[0:h:2, 1:w:2] + m[1:h:2, 1:w:2]))

    @property
    def texel_size(self) -> float:
        """Metres per texel at mip level 0 (along u)."""
        return float(np.linalg.norm(self.edge_u) / self.texture.shape[1])


@dataclass
class Lamp:
    """A street lamp: light source position (3,) in world, RGB colour and intensity."""

    position: np.ndarray
    color: np.ndarray
    intensity: float = 60.0


@dataclass
class Scene:
    """Quads, lamps and the street extent (metres) of a synthetic street.

    ``fields`` caches the condition-bound random fields over the ground (snow cover, puddles).
    """

    quads: list[Quad]
    lamps: list[Lamp]
    length: float
    road_half_width: float
    street_half_width: float
    seed: int
    cars: list["CarSlot"] = field(default_factory=list, repr=False)
    num_static: int = -1                  # quads[:num_static] do not depend on the variant
    texel: float = 0.04
    variant: int = 0
    fields: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.quads)

    def with_changes(self, variant: int, fraction: float) -> "Scene":
        """The same street on another day: each parked car is, with probability ``fraction``,
        gone (half of the cases) or replaced by another car parked 0.5-1.5 m further along.

        Deterministic for (seed, variant); the static part (ground, buildings, lamps) is shared.
        """
        quads = self.quads[:self.num_static]  # a new list sharing the static quads
        for index, slot in enumerate(self.cars):
            draw = np.random.default_rng([self.seed, 8, index, variant])
            u = draw.random()
            if variant != 0 and u < fraction / 2:
                continue
            moved = variant != 0 and u < fraction
            if moved:
                slot = CarSlot(slot.x + draw.choice([-1, 1]) * draw.uniform(0.5, 1.5), slot.y, slot.length,
                               slot.width, draw.uniform(1.3, 1.7), draw.uniform(-0.05, 0.05))
            add_box(quads, np.random.default_rng([self.seed, 7, index, variant if moved else 0]),
                    (slot.x, slot.y), (slot.length, slot.width), slot.height, "car", False, self.texel, slot.yaw)
        return Scene(quads, self.lamps, self.length, self.road_half_width, self.street_half_width, self.seed,
                     self.cars, self.num_static, self.texel, variant, self.fields)


@dataclass(frozen=True)
class CarSlot:
    """A parked car of the reference day: centre (x, y), footprint, height (metres) and yaw (rad)."""

    x: float
    y: float
    length: float
    width: float
    height: float
    yaw: float


def add_box(quads: list, rng: np.random.Generator, center_xy, size, height: float,
            kind: str = "box", metal: bool = False, texel: float = 0.04, yaw: float = 0.0):
    """Append the 4 sides and the top of an axis-aligned (rotated by ``yaw``) box standing on z=0."""
    cx, cy = center_xy
    sx, sy = size
    c, s = np.cos(yaw), np.sin(yaw)
    ax, ay = np.array([c, s, 0.0]), np.array([-s, c, 0.0])
    corner = np.array([cx, cy, 0.0]) - ax * sx / 2 - ay * sy / 2
    up = np.array([0.0, 0.0, height])
    sides = [  # outward normals: edge_u x edge_v points out of the box
        (corner, ax * sx, sx),
        (corner + ax * sx, ay * sy, sy),
        (corner + ax * sx + ay * sy, -ax * sx, sx),
        (corner + ay * sy, -ay * sy, sy),
    ]
    body = textures.random_color(rng, saturation=(0.2, 0.9), value=(0.25, 0.9))
    for k, (origin, edge_u, width) in enumerate(sides):
        if kind == "car":
            tex = textures.car_texture(rng, width, height, body, texel, long_side=k % 2 == 0)
        else:
            tex = textures.object_texture(rng, width, height, texel, metal)
        quads.append(Quad(origin, edge_u, up, tex, kind))
    top = textures.object_texture(rng, sx, sy, texel, metal)
    top[..., textures.LEDGE] = 1.0
    quads.append(Quad(corner + up, ax * sx, ay * sy, top, kind))


def make_scene(seed: int = 0, length: float = 60.0, road_half_width: float = 4.0,
               street_half_width: float = 7.0, texel: float = 0.04) -> Scene:
    """Build the street for ``seed``: ground, facades on both sides, end walls, cars, kiosks, lamps.

    This is the reference day (variant 0); :meth:`Scene.with_changes` gives other days.

    The camera traversals of :mod:`generate` run along x in [0, length]; the street extends 12 m
    beyond both ends and is closed by buildings so that every ray looking along it hits a surface.
    """
    rng = np.random.default_rng(seed)
    margin = 12.0
    x0, x1 = -margin, length + margin
    quads: list[Quad] = []
    width = 2 * street_half_width
    ground = textures.ground_texture(rng, x1 - x0, width, road_half_width, texel)
    # ground: edge_u along +x, edge_v along +y so that the normal (u x v) points up (+z)
    quads.append(Quad([x0, -street_half_width, 0.0], [x1 - x0, 0, 0], [0, width, 0], ground, "ground"))
    for side in (+1, -1):
        x = x0
        while x < x1:
            w = min(rng.uniform(6.0, 14.0), x1 - x)
            h = rng.uniform(7.0, 16.0)
            tex = textures.facade_texture(rng, w, h, texel)
            y = side * street_half_width
            # facade faces the street: normal = u x v must point to -side * y
            if side > 0:
                quads.append(Quad([x, y, 0], [w, 0, 0], [0, 0, h], tex, "facade"))
            else:
                quads.append(Quad([x + w, y, 0], [-w, 0, 0], [0, 0, h], tex, "facade"))
            x += w
    for x_end, direction in ((x0, 1), (x1, -1)):  # end walls facing into the street
        h = rng.uniform(10.0, 18.0)
        tex = textures.facade_texture(rng, width, h, texel)
        if direction > 0:
            quads.append(Quad([x_end, -street_half_width, 0], [0, width, 0], [0, 0, h], tex, "facade"))
        else:
            quads.append(Quad([x_end, street_half_width, 0], [0, -width, 0], [0, 0, h], tex, "facade"))
    # parked cars along the road edges (added last, they change between days), kiosks and bins
    cars = []
    for side in (+1, -1):
        x = x0 + rng.uniform(0, 6)
        while x < x1 - 5:
            if rng.random() < 0.55:
                cars.append(CarSlot(x + 2.1, side * (road_half_width - 0.95), 4.2, 1.8, rng.uniform(1.3, 1.7),
                                    rng.uniform(-0.05, 0.05)))
            x += rng.uniform(6.0, 9.0)
    for side in (+1, -1):
        x = x0 + rng.uniform(0, 10)
        while x < x1 - 3:
            y = side * rng.uniform(road_half_width + 0.8, street_half_width - 1.0)
            if rng.random() < 0.5:
                add_box(quads, rng, (x, y), (rng.uniform(1.2, 2.5), rng.uniform(0.8, 1.5)),
                        rng.uniform(1.8, 2.6), "kiosk", False, texel, yaw=rng.uniform(-0.3, 0.3))
            else:
                add_box(quads, rng, (x, y), (0.6, 0.6), rng.uniform(0.8, 1.1), "bin", False, texel)
            x += rng.uniform(8.0, 16.0)
    lamps = []
    for side in (+1, -1):
        x = x0 + rng.uniform(2, 8)
        while x < x1 - 2:
            y = side * (road_half_width + 0.5)
            h = rng.uniform(4.5, 6.0)
            add_box(quads, rng, (x, y), (0.18, 0.18), h, "pole", True, texel)
            color = np.array([1.0, 0.75, 0.45]) if rng.random() < 0.6 else np.array([0.9, 0.95, 1.0])
            lamps.append(Lamp(np.array([x, y - side * 0.6, h + 0.1]), color, rng.uniform(40, 80)))
            x += rng.uniform(12.0, 20.0)
    static = Scene(quads, lamps, float(length), float(road_half_width), float(street_half_width), int(seed),
                   cars, len(quads), texel)
    return static.with_changes(0, 0.0)
