"""Random street layouts as plain data: one :class:`Scene` per sequence, no pixels.

World frame (metres): x to the right of the road axis, y up (ground at 0), z along the road,
forward. The road is centred on x = 0 (or on the parabola of a :class:`Bend`); sidewalks, an
optional verge (grass or paving) and the building façades follow on both sides, and a
:class:`Junction` adds a crossing road. Everything that is not a vertical plane along or across
the road is a :class:`Thing` made of axis-aligned boxes and ellipsoids (:class:`Part`), which keeps
the renderer a handful of vectorised ray intersections. :func:`make_scene` draws today's straight
street; :mod:`madm_ros.synthetic.variety` draws the varied scenes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from madm_ros.palettes import DSEC_11

__all__ = [
    "Bend", "CameraPath", "Junction", "Lighting", "Material", "Part", "Scene", "Strip", "Thing", "barrier_strip",
    "facade_strip", "make_car", "make_person", "make_pole", "make_scene", "make_thing", "make_tree", "parts_at",
    "pick_color", "strip_from_rows",
]


def _id(name: str) -> int:
    return DSEC_11.class_names.index(name)


SKY, BUILDING, FENCE, PERSON, POLE = _id("sky"), _id("building"), _id("fence"), _id("person"), _id("pole")
ROAD, SIDEWALK, VEGETATION, CAR, WALL, SIGN = (
    _id("road"),
    _id("sidewalk"),
    _id("vegetation"),
    _id("car"),
    _id("wall"),
    _id("traffic sign"),
)


class Material(IntEnum):
    """Surface kinds: they choose the RGB texture, the thermal model and the depth sensor's behaviour."""

    SKY = 0
    ASPHALT = 1
    MARKING = 2
    PAVING = 3
    CURB = 4
    GRASS = 5
    BRICK = 6
    PLASTER = 7
    GLASS = 8
    CONCRETE = 9
    SLATS = 10
    METAL = 11
    SIGN = 12
    BARK = 13
    FOLIAGE = 14
    PAINT = 15
    TYRE = 16
    LAMP = 17
    SKIN = 18
    CLOTH = 19


@dataclass(frozen=True)
class Lighting:
    """Illumination and weather of one sequence (RGB radiometry and thermal boundary conditions).

    Attributes:
        night: Night sequence (no sun, dim ambient, lit windows and lamps).
        sun_dir: Unit vector towards the sun (world frame).
        sun_rgb: Sun irradiance per channel (linear units).
        ambient_rgb: Sky irradiance on an upward surface (linear).
        horizon_rgb, zenith_rgb: Sky radiance at the horizon and the zenith (linear).
        clouds: Cloud cover in [0, 1].
        exposure: Camera exposure multiplier.
        air_k: Air temperature, kelvin.
        sky_k: Effective radiative temperature of the clear sky at the zenith, kelvin.
        sun_heating: Scale of solar heating of surfaces in [0, 1] (0 at night).
    """

    night: bool
    sun_dir: tuple[float, float, float]
    sun_rgb: tuple[float, float, float]
    ambient_rgb: tuple[float, float, float]
    horizon_rgb: tuple[float, float, float]
    zenith_rgb: tuple[float, float, float]
    clouds: float
    exposure: float
    air_k: float
    sky_k: float
    sun_heating: float


@dataclass(frozen=True)
class Bend:
    """A road that curves: its centreline is ``x = curvature / 2 * (z - z0)**2``.

    A parabola rather than a circle, so the road keeps turning the same way and never comes back
    into view; ``curvature`` (1/m) is its curvature at ``z0``. Everything that follows the road
    (ground, strips, things, the camera) is placed at a lateral offset ``u`` from it, at world
    ``x = u + offset(z)``.
    """

    curvature: float
    z0: float

    def offset(self, z: float | np.ndarray) -> float | np.ndarray:
        """Centreline x at ``z``."""
        return 0.5 * self.curvature * (z - self.z0) ** 2

    def slope(self, z: float | np.ndarray) -> float | np.ndarray:
        """dx/dz of the centreline at ``z`` (the tangent of the road's heading)."""
        return self.curvature * (z - self.z0)


@dataclass(frozen=True)
class Junction:
    """A straight road crossing the main road at right angles, centred on ``z``.

    Attributes:
        z: Centre of the crossing road along the main road, metres.
        road_half: Half width of its carriageway, metres.
        sidewalk: Width of its sidewalks, metres.
    """

    z: float
    road_half: float
    sidewalk: float


@dataclass(frozen=True)
class Strip:
    """Segments of a vertical plane along the road (``x = const``) or across it (``z = const``), facing the road.

    ``axis`` names the coordinate that is constant on the plane and ``x`` holds its value (for a
    strip along a :class:`Bend`, the lateral offset from the centreline); ``z0``/``z1`` are the
    segments' extents along the plane (z for ``axis="x"``, x for ``axis="z"``); the plane faces
    ``facing`` on its axis (0: the main road; a junction's centre for strips across). One entry
    per segment, sorted by ``z0`` and not overlapping; ``z1 <= next z0``. Slat pitch > 0 makes the
    segment see-through between slats (fences); window pitch > 0 draws a window grid (façades)
    whose panes are ``Material.GLASS``.
    """

    x: float
    z0: np.ndarray
    z1: np.ndarray
    height: np.ndarray
    label: np.ndarray
    material: np.ndarray
    color: np.ndarray  # (n, 3) linear albedo
    heat: np.ndarray  # kelvin above the material's thermal baseline
    slat_pitch: np.ndarray
    slat_fill: np.ndarray
    floor_height: np.ndarray
    window_pitch: np.ndarray
    window_width: np.ndarray  # fraction of the pitch
    window_height: np.ndarray  # fraction of the floor
    axis: str = "x"
    facing: float = 0.0


@dataclass(frozen=True)
class Part:
    """An axis-aligned box or the ellipsoid inscribed in it, in the owning thing's frame.

    ``swing`` (metres) moves the part along z by ``swing * sin(gait phase)`` (walking limbs).
    ``top_material`` is used on upward-facing box faces (car roofs over glass cabins).
    """

    shape: str  # "box" or "ellipsoid"
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    label: int
    material: int
    color: tuple[float, float, float]
    heat: float = 0.0
    top_material: int = -1
    swing: float = 0.0


@dataclass(frozen=True)
class Thing:
    """An object standing on the ground at ``(x + vx * t, z + vz * t)``; persons also swing their limbs.

    On a :class:`Bend`, ``x`` is the lateral offset from the road's centreline and the thing
    follows the curve. Limbs swing along the direction of travel (x for things that cross the road).
    """

    kind: str
    x: float
    z: float
    vz: float
    parts: tuple[Part, ...]
    gait_hz: float = 0.0
    gait_phase: float = 0.0
    z_lo: float = 0.0  # extent of the parts along z, relative to z
    z_hi: float = 0.0
    vx: float = 0.0
    bend: Bend | None = None


@dataclass(frozen=True)
class CameraPath:
    """Smooth camera motion: forward at ``speed`` with lateral sway, yaw wobble and pitch/roll jitter.

    Angles in radians, frequencies in Hz. ``pose(t)`` is analytic so event substeps see the
    same trajectory as labelled frames. ``roll0`` tilts the horizon; with a ``bend`` the camera
    follows the curve (``x0`` is then its lateral offset, and it yaws along the road's heading).
    """

    x0: float
    height: float
    speed: float
    sway: float
    sway_hz: float
    yaw0: float
    yaw_amp: float
    yaw_hz: float
    pitch0: float
    jitter: float
    phases: tuple[float, float, float, float]
    roll0: float = 0.0
    bend: Bend | None = None

    def pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Camera centre (3,) and rotation camera→world (3, 3) at time ``t`` seconds."""
        p = self.phases
        x = self.x0 + self.sway * np.sin(2 * np.pi * self.sway_hz * t + p[0])
        yaw = self.yaw0 + self.yaw_amp * np.sin(2 * np.pi * self.yaw_hz * t + p[1])
        pitch = self.pitch0 + self.jitter * np.sin(2 * np.pi * 1.7 * t + p[2])
        roll = self.roll0 + 0.7 * self.jitter * np.sin(2 * np.pi * 1.3 * t + p[3])
        y = self.height + 0.02 * np.sin(2 * np.pi * 2.1 * t + p[2])
        if self.bend is not None:
            x += self.bend.offset(self.speed * t)
            yaw += np.arctan(self.bend.slope(self.speed * t))
        cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
        r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])  # positive pitch looks up
        r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        return np.array([x, y, self.speed * t]), r_yaw @ r_pitch @ r_roll


@dataclass(frozen=True)
class Scene:
    """One sequence's world: ground layout, vertical strips, things, lighting and camera path.

    ``kind`` names the layout (``"street"``, ``"junction"``, ``"open"``: see
    :mod:`madm_ros.synthetic.variety`); ``bend`` curves the main road, ``junction`` adds a crossing road.
    """

    road_half: float
    sidewalk: float
    verge_grass: tuple[bool, bool]  # left, right: ground behind the sidewalk is grass (vegetation)
    centre_line: bool
    crosswalk_z: float | None
    asphalt_rgb: tuple[float, float, float]
    paving_rgb: tuple[float, float, float]
    grass_rgb: tuple[float, float, float]
    strips: tuple[Strip, ...]
    things: tuple[Thing, ...]
    lighting: Lighting
    camera: CameraPath
    texture_seed: int
    kind: str = "street"
    bend: Bend | None = None
    junction: Junction | None = None


def parts_at(thing: Thing, t: float) -> list[tuple[str, np.ndarray, np.ndarray, Part]]:
    """World-frame ``(shape, lo, hi, part)`` of every part of ``thing`` at time ``t`` seconds."""
    z = thing.z + thing.vz * t
    x = thing.x + thing.vx * t if thing.vx else thing.x
    if thing.bend is not None:
        x += thing.bend.offset(z)
    origin = np.array([x, 0.0, z])
    phase = np.sin(2 * np.pi * thing.gait_hz * t + thing.gait_phase) if thing.gait_hz else 0.0
    out = []
    for part in thing.parts:
        swing = part.swing * phase
        shift = origin + (np.array([swing, 0.0, 0.0]) if thing.vx else np.array([0.0, 0.0, swing]))
        out.append((part.shape, shift + part.lo, shift + part.hi, part))
    return out


# -- random layout ----------------------------------------------------------------------------------

_FACADE_COLORS = np.array(
    [
        (0.55, 0.50, 0.42),
        (0.60, 0.58, 0.55),
        (0.45, 0.22, 0.16),
        (0.70, 0.66, 0.58),
        (0.35, 0.35, 0.37),
        (0.62, 0.52, 0.38),
        (0.52, 0.55, 0.60),
        (0.68, 0.60, 0.50),
        (0.40, 0.30, 0.25),
    ]
)
_CAR_COLORS = np.array(
    [
        (0.80, 0.80, 0.80),
        (0.05, 0.05, 0.06),
        (0.45, 0.46, 0.48),
        (0.55, 0.06, 0.05),
        (0.06, 0.12, 0.40),
        (0.25, 0.27, 0.30),
        (0.70, 0.68, 0.60),
        (0.10, 0.25, 0.12),
        (0.75, 0.45, 0.05),
    ]
)
_CLOTH_COLORS = np.array(
    [
        (0.05, 0.05, 0.07),
        (0.15, 0.18, 0.35),
        (0.50, 0.08, 0.08),
        (0.60, 0.60, 0.58),
        (0.20, 0.30, 0.15),
        (0.45, 0.35, 0.25),
        (0.08, 0.10, 0.20),
        (0.70, 0.55, 0.20),
        (0.30, 0.30, 0.32),
    ]
)
_SKIN_COLORS = np.array([(0.70, 0.50, 0.38), (0.55, 0.36, 0.25), (0.35, 0.22, 0.15), (0.80, 0.62, 0.50)])
_SIGN_COLORS = np.array([(0.65, 0.05, 0.04), (0.05, 0.15, 0.55), (0.85, 0.85, 0.82), (0.85, 0.65, 0.05)])


def pick_color(rng: np.random.Generator, colors: np.ndarray, jitter: float = 0.08) -> tuple[float, float, float]:
    """One of ``colors`` with a per-channel jitter, so that repeated objects are not painted identically."""
    base = colors[rng.integers(len(colors))] * rng.uniform(1 - jitter, 1 + jitter, 3)
    return tuple(float(v) for v in np.clip(base, 0.01, 0.95))  # type: ignore[return-value]


def _lighting(rng: np.random.Generator, night_probability: float) -> Lighting:
    night = bool(rng.random() < night_probability)
    clouds = float(rng.uniform(0, 0.9))
    elevation, azimuth = rng.uniform(np.radians(12), np.radians(65)), rng.uniform(0, 2 * np.pi)
    sun_dir = (np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth))
    air = rng.uniform(273.0, 295.0) if night else rng.uniform(280.0, 305.0)
    if night:
        sun = np.zeros(3)
        ambient = np.array([0.018, 0.02, 0.03]) * rng.uniform(0.6, 1.4)
        horizon, zenith = np.array([0.03, 0.03, 0.045]), np.array([0.005, 0.006, 0.012])
        exposure = rng.uniform(2.5, 5.0)
    else:
        warm = rng.uniform(0, 0.25) * (1 - np.sin(elevation))  # low sun is warmer
        sun = np.array([1.0, 0.95 - 0.5 * warm, 0.88 - warm]) * rng.uniform(0.9, 1.3) * (1 - 0.8 * clouds)
        ambient = np.array([0.30, 0.34, 0.42]) * rng.uniform(0.7, 1.2) * (1 + 0.5 * clouds)
        horizon = np.array([0.75, 0.80, 0.88]) * rng.uniform(0.8, 1.1)
        zenith = np.array([0.20, 0.35, 0.75]) * rng.uniform(0.7, 1.1) * (1 - clouds) + 0.6 * clouds
        exposure = rng.uniform(0.55, 1.25)
    sky = air - rng.uniform(25, 45) * (1 - 0.7 * clouds)
    return Lighting(
        night=night,
        sun_dir=tuple(float(v) for v in sun_dir),  # type: ignore[arg-type]
        sun_rgb=tuple(float(v) for v in sun),
        ambient_rgb=tuple(float(v) for v in ambient),  # type: ignore[arg-type]
        horizon_rgb=tuple(float(v) for v in horizon),
        zenith_rgb=tuple(float(v) for v in zenith),  # type: ignore[arg-type]
        clouds=clouds,
        exposure=float(exposure),
        air_k=float(air),
        sky_k=float(sky),
        sun_heating=0.0 if night else float((1 - 0.8 * clouds) * np.sin(elevation) ** 0.5),
    )


def strip_from_rows(x: float, rows: list[dict]) -> Strip:
    """Column arrays of a roadside strip from its per-segment ``rows`` (missing keys take ``default``)."""
    def col(key: str, default: float = 0.0) -> np.ndarray:
        return np.array([row.get(key, default) for row in rows], dtype=np.float32)

    return Strip(
        x=x,
        z0=col("z0"),
        z1=col("z1"),
        height=col("height"),
        label=np.array([r["label"] for r in rows], dtype=np.uint8),
        material=np.array([r["material"] for r in rows], dtype=np.uint8),
        color=np.array([r["color"] for r in rows], dtype=np.float32).reshape(-1, 3),
        heat=col("heat"),
        slat_pitch=col("slat_pitch"),
        slat_fill=col("slat_fill", 1.0),
        floor_height=col("floor_height"),
        window_pitch=col("window_pitch"),
        window_width=col("window_width"),
        window_height=col("window_height"),
    )


def facade_strip(rng: np.random.Generator, x: float, z_min: float, z_max: float, far: bool) -> Strip:
    """Building façades along one side at lateral ``x`` from ``z_min`` to ``z_max`` (``far``: the taller, longer back row)."""
    rows, z = [], z_min
    while z < z_max:
        length = rng.uniform(10, 45) if far else rng.uniform(8, 30)
        if rng.random() < (0.15 if far else 0.2):  # a gap between buildings
            z += rng.uniform(4, 14)
            continue
        treeline = far and rng.random() < 0.3
        brick = rng.random() < 0.4
        rows.append(
            dict(
                z0=z,
                z1=z + length,
                height=rng.uniform(8, 16) if treeline else rng.uniform(15, 40) if far else rng.uniform(6, 24),
                label=VEGETATION if treeline else BUILDING,
                material=Material.FOLIAGE if treeline else Material.BRICK if brick else Material.PLASTER,
                color=(0.08, 0.16, 0.05) if treeline else pick_color(rng, _FACADE_COLORS, 0.15),
                heat=rng.normal(0, 1.0),
                floor_height=0 if treeline else rng.uniform(2.8, 3.6),
                window_pitch=0 if treeline else rng.uniform(1.6, 3.2),
                window_width=rng.uniform(0.35, 0.65),
                window_height=rng.uniform(0.4, 0.65),
            )
        )
        z += length
    return strip_from_rows(x, rows)


def barrier_strip(rng: np.random.Generator, x: float, z_min: float, z_max: float, forced: str, forced_z: float) -> Strip:
    """Walls and fences along the back of a sidewalk; ``forced`` kind is placed at ``forced_z``."""
    rows, z = [], z_min
    while z < z_max:
        length = rng.uniform(3, 14)
        kind = forced if z <= forced_z < z + length else rng.choice(["none", "wall", "fence"], p=[0.4, 0.3, 0.3])
        if kind == "wall":
            rows.append(
                dict(
                    z0=z,
                    z1=z + length,
                    height=rng.uniform(0.8, 2.6),
                    label=WALL,
                    material=Material.CONCRETE,
                    color=pick_color(rng, _FACADE_COLORS[[1, 3, 4, 6]], 0.1),
                    heat=rng.normal(0, 0.5),
                )
            )
        elif kind == "fence":
            slatted = rng.random() < 0.75
            rows.append(
                dict(
                    z0=z,
                    z1=z + length,
                    height=rng.uniform(0.9, 2.0),
                    label=FENCE,
                    material=Material.SLATS,
                    color=pick_color(rng, np.array([(0.35, 0.25, 0.15), (0.2, 0.22, 0.2), (0.5, 0.5, 0.48)])),
                    slat_pitch=rng.uniform(0.1, 0.3) if slatted else 0.0,
                    slat_fill=rng.uniform(0.25, 0.6),
                    heat=rng.normal(0, 0.5),
                )
            )
        z += length
    return strip_from_rows(x, rows)


def make_car(rng: np.random.Generator, x: float, z: float, vz: float, heading: int, moving: bool) -> Thing:
    """A car of random size and paint at ``(x, z)``: speed ``vz``, front to ``heading`` (±1); ``moving`` warms it (thermal)."""
    length, width = rng.uniform(3.8, 4.9), rng.uniform(1.65, 1.9)
    paint = pick_color(rng, _CAR_COLORS, 0.05)
    w2, l2 = width / 2, length / 2
    hood = 0.3 * length
    engine = rng.uniform(8, 20) if moving else rng.uniform(0, 4)
    tyre_heat = rng.uniform(6, 15) if moving else rng.uniform(0, 2)
    front = heading * l2
    lo_front, hi_front = (min(front, front - heading * hood), max(front, front - heading * hood))
    lo_rear, hi_rear = (min(-front, front - heading * hood), max(-front, front - heading * hood))
    cab0, cab1 = -0.35 * length * heading, 0.15 * length * heading
    parts = [
        Part("box", (-w2, 0.3, lo_front), (w2, 0.95, hi_front), CAR, Material.PAINT, paint, engine),
        Part("box", (-w2, 0.3, lo_rear), (w2, 1.0, hi_rear), CAR, Material.PAINT, paint, rng.uniform(0, 3)),
        Part(
            "box",
            (-w2 + 0.08, 0.95, min(cab0, cab1)),
            (w2 - 0.08, rng.uniform(1.4, 1.55), max(cab0, cab1)),
            CAR,
            Material.GLASS,
            (0.03, 0.035, 0.04),
            0.0,
            top_material=Material.PAINT,
        ),
    ]
    for side in (-1, 1):
        for end in (-1, 1):
            zc = end * (l2 - 0.8)
            parts.append(
                Part(
                    "box",
                    (side * w2 - 0.12, 0.0, zc - 0.32),
                    (side * w2 + 0.12, 0.62, zc + 0.32),
                    CAR,
                    Material.TYRE,
                    (0.03, 0.03, 0.03),
                    tyre_heat,
                )
            )
        lamp_z = front - heading * 0.02
        parts.append(
            Part(
                "box",
                (side * (w2 - 0.35) - 0.15, 0.7, min(lamp_z, front + heading * 0.03)),
                (side * (w2 - 0.35) + 0.15, 0.82, max(lamp_z, front + heading * 0.03)),
                CAR,
                Material.LAMP,
                (0.9, 0.9, 0.85) if heading > 0 else (0.8, 0.1, 0.05),
                engine * 0.5,
            )
        )
    return make_thing("car", x, z, vz, parts)


def make_person(rng: np.random.Generator, x: float, z: float, vz: float, air_k: float) -> Thing:
    """A pedestrian of random height and clothes; ``air_k`` sets how much warmer than the air they look in thermal."""
    h = rng.uniform(1.55, 1.92)
    shirt, trousers, skin = (
        pick_color(rng, _CLOTH_COLORS, 0.1),
        pick_color(rng, _CLOTH_COLORS, 0.1),
        pick_color(rng, _SKIN_COLORS, 0.05),
    )
    cloth_heat = rng.uniform(0.35, 0.6) * (306.0 - air_k)  # clothing sits between skin and air
    swing = 0.18 * min(abs(vz), 1.5) / 1.5
    w = 0.2 * h / 1.75
    parts = [
        Part(
            "box",
            (-w - 0.02, 0.0, -0.07),
            (-0.02, 0.47 * h, 0.07),
            PERSON,
            Material.CLOTH,
            trousers,
            cloth_heat,
            swing=swing,
        ),
        Part(
            "box",
            (0.02, 0.0, -0.07),
            (w + 0.02, 0.47 * h, 0.07),
            PERSON,
            Material.CLOTH,
            trousers,
            cloth_heat,
            swing=-swing,
        ),
        Part(
            "box", (-w - 0.02, 0.47 * h, -0.12), (w + 0.02, 0.82 * h, 0.12), PERSON, Material.CLOTH, shirt, cloth_heat
        ),
        Part(
            "box",
            (-w - 0.11, 0.45 * h, -0.05),
            (-w - 0.03, 0.8 * h, 0.05),
            PERSON,
            Material.CLOTH,
            shirt,
            cloth_heat,
            swing=-swing,
        ),
        Part(
            "box",
            (w + 0.03, 0.45 * h, -0.05),
            (w + 0.11, 0.8 * h, 0.05),
            PERSON,
            Material.CLOTH,
            shirt,
            cloth_heat,
            swing=swing,
        ),
        Part("box", (-0.05, 0.82 * h, -0.05), (0.05, 0.86 * h, 0.05), PERSON, Material.SKIN, skin),
        Part("ellipsoid", (-0.09, 0.855 * h, -0.1), (0.09, h, 0.1), PERSON, Material.SKIN, skin, rng.normal(0, 0.5)),
    ]
    gait = abs(vz) / 1.4 if vz else 0.0
    return make_thing("person", x, z, vz, parts, gait_hz=gait, gait_phase=rng.uniform(0, 2 * np.pi))


def make_thing(kind: str, x: float, z: float, vz: float, parts: list[Part], **kwargs: Any) -> Thing:
    """A :class:`Thing` from its parts, with the depth range it sweeps (parts that swing included) for culling."""
    z_lo = min(p.lo[2] - abs(p.swing) for p in parts)
    z_hi = max(p.hi[2] + abs(p.swing) for p in parts)
    return Thing(kind, float(x), float(z), float(vz), tuple(parts), z_lo=z_lo, z_hi=z_hi, **kwargs)


def make_tree(rng: np.random.Generator, x: float, z: float) -> Thing:
    """A tree (trunk and crown of random size) at ``(x, z)``."""
    trunk_h, radius = rng.uniform(1.8, 3.2), rng.uniform(1.2, 2.8)
    leaves = pick_color(rng, np.array([(0.10, 0.20, 0.05), (0.16, 0.22, 0.06), (0.08, 0.14, 0.06)]), 0.15)
    return make_thing(
        "tree",
        x,
        z,
        0.0,
        [
            Part(
                "box",
                (-0.15, 0.0, -0.15),
                (0.15, trunk_h + radius * 0.5, 0.15),
                VEGETATION,
                Material.BARK,
                (0.15, 0.1, 0.07),
            ),
            Part(
                "ellipsoid",
                (-radius, trunk_h, -radius),
                (radius, trunk_h + rng.uniform(1.6, 2.4) * radius, radius),
                VEGETATION,
                Material.FOLIAGE,
                leaves,
                rng.normal(0, 0.5),
            ),
        ],
    )


def make_pole(rng: np.random.Generator, x: float, z: float, side: int, sign: bool) -> Thing:
    """A street light on the ``side`` (±1) of the road, its arm reaching over it, or with ``sign`` a traffic-sign pole."""
    grey = pick_color(rng, np.array([(0.35, 0.36, 0.37), (0.12, 0.13, 0.12), (0.55, 0.55, 0.52)]), 0.05)
    if not sign:
        height = rng.uniform(5.0, 8.5)
        arm = rng.uniform(1.0, 2.2)
        return make_thing(
            "pole",
            x,
            z,
            0.0,
            [
                Part("box", (-0.07, 0.0, -0.07), (0.07, height, 0.07), POLE, Material.METAL, grey),
                Part(
                    "box",
                    (min(0.0, -side * arm), height - 0.12, -0.05),
                    (max(0.0, -side * arm), height, 0.05),
                    POLE,
                    Material.METAL,
                    grey,
                ),
            ],
        )
    height = rng.uniform(2.2, 3.0)
    w, h = (rng.uniform(0.5, 0.8), rng.uniform(0.5, 0.8)) if rng.random() < 0.7 else (rng.uniform(0.9, 1.6), 0.5)
    face = pick_color(rng, _SIGN_COLORS, 0.05)
    return make_thing(
        "sign",
        x,
        z,
        0.0,
        [
            Part("box", (-0.04, 0.0, -0.04), (0.04, height, 0.04), POLE, Material.METAL, grey),
            Part("box", (-w / 2, height, -0.06), (w / 2, height + h, -0.03), SIGN, Material.SIGN, face),
        ],
    )


def make_scene(rng: np.random.Generator, duration_s: float, night_probability: float) -> Scene:
    """A random street for a sequence of ``duration_s`` seconds (layout covers the camera's view)."""
    lighting = _lighting(rng, night_probability)
    road_half, sidewalk = rng.uniform(3.5, 7.5), rng.uniform(2.0, 4.2)
    parking = road_half > 5.0  # a parking strip along each curb, outside the driving lanes
    drive_half = road_half - 2.3 if parking else road_half
    speed = rng.uniform(4.0, 14.0)
    camera = CameraPath(
        x0=rng.uniform(0.3, 0.7) * drive_half,
        height=rng.uniform(1.35, 1.75),
        speed=speed,
        sway=rng.uniform(0, 0.25),
        sway_hz=rng.uniform(0.05, 0.3),
        yaw0=np.radians(rng.normal(0, 1.5)),
        yaw_amp=np.radians(rng.uniform(0, 4)),
        yaw_hz=rng.uniform(0.05, 0.25),
        pitch0=np.radians(rng.normal(-1, 1.0)),
        jitter=np.radians(rng.uniform(0.1, 0.6)),
        phases=tuple(float(v) for v in rng.uniform(0, 2 * np.pi, 4)),  # type: ignore[arg-type]
    )
    z_min, z_max = -30.0, speed * duration_s + 160.0
    curb = road_half + sidewalk
    verge = (rng.uniform(0, 6) if rng.random() < 0.6 else 0.0, rng.uniform(0, 6) if rng.random() < 0.6 else 0.0)
    verge_grass = (bool(rng.random() < 0.6), bool(rng.random() < 0.6))
    strips, things = [], []
    forced = ["wall", "fence"] if rng.random() < 0.5 else ["fence", "wall"]
    for side, v, kind in zip((-1, 1), verge, forced):
        facade_x = side * (curb + v + 0.3)
        strips.append(facade_strip(rng, facade_x, z_min, z_max, far=False))
        strips.append(facade_strip(rng, side * (abs(facade_x) + rng.uniform(10, 25)), z_min, z_max, far=True))
        strips.append(barrier_strip(rng, side * (curb + 0.05), z_min, z_max, kind, rng.uniform(8, 25)))
        for kind_sign, spacing in ((False, (12, 28)), (True, (14, 35))):  # street lights, signs
            z = z_min + rng.uniform(0, spacing[0]) + (4 if kind_sign else 0)
            while z < z_max:
                things.append(make_pole(rng, side * (road_half + 0.45), z, side, kind_sign))
                z += rng.uniform(*spacing)
        z = z_min + rng.uniform(0, 8)
        while z < z_max:  # trees on the verge, or at the back of the sidewalk
            if rng.random() < (0.8 if v > 2 else 0.35):
                tx = side * (curb + v / 2 if v > 2 else road_half + sidewalk * 0.8)
                things.append(make_tree(rng, tx, z))
            z += rng.uniform(6, 16)
        if v > 1.5 and verge_grass[(side + 1) // 2]:  # bushes
            for zb in rng.uniform(z_min, z_max, int((z_max - z_min) / 12)):
                r = rng.uniform(0.4, 1.1)
                things.append(
                    make_thing(
                        "bush",
                        side * (curb + rng.uniform(0.6, v - 0.4)),
                        zb,
                        0.0,
                        [
                            Part(
                                "ellipsoid",
                                (-r, -0.3 * r, -r * 1.3),
                                (r, 1.4 * r, r * 1.3),
                                VEGETATION,
                                Material.FOLIAGE,
                                pick_color(rng, np.array([(0.09, 0.18, 0.05), (0.14, 0.2, 0.07)]), 0.2),
                            )
                        ],
                    )
                )
        z = z_min + rng.uniform(0, 6)
        while z < z_max:  # pedestrians on the sidewalk
            walking = rng.random() < 0.75
            vz = rng.choice([-1, 1]) * rng.uniform(0.8, 1.6) if walking else 0.0
            things.append(make_person(rng, side * (road_half + rng.uniform(0.5, sidewalk - 0.4)), z, vz, lighting.air_k))
            z += rng.uniform(3, 11)
        z = z_min + rng.uniform(0, 8)
        while z < z_max:  # parked cars along the curb
            if parking and rng.random() < 0.5:
                heading = 1 if side > 0 or rng.random() < 0.3 else -1
                things.append(make_car(rng, side * (road_half - 1.15), z, 0.0, heading, moving=False))
            z += rng.uniform(5.5, 9)
    n_lanes = max(1, int(drive_half // 3.0))
    lane_w = drive_half / n_lanes
    for lane in range(n_lanes):  # traffic: same direction on the right half, oncoming on the left
        for side in (-1, 1):
            x = side * (lane + 0.5) * lane_w
            z = rng.uniform(12, 30)
            while z < z_max:
                if side > 0:
                    vz = speed * rng.uniform(1.0, 1.2)  # never caught up by the camera
                    zc = z + 6 if abs(x - camera.x0) < lane_w * 0.7 else z  # keep clear of the camera
                else:
                    vz, zc = -rng.uniform(5, 14), z
                if rng.random() < 0.6:
                    things.append(make_car(rng, x, zc, vz, 1 if side > 0 else -1, moving=True))
                z += rng.uniform(10, 35)
    return Scene(
        road_half=float(road_half),
        sidewalk=float(sidewalk),
        verge_grass=verge_grass,
        centre_line=bool(road_half > 4.5 and rng.random() < 0.8),
        crosswalk_z=float(rng.uniform(15, 60)) if rng.random() < 0.4 else None,
        asphalt_rgb=pick_color(rng, np.array([(0.09, 0.09, 0.095), (0.14, 0.135, 0.13), (0.2, 0.2, 0.2)]), 0.05),
        paving_rgb=pick_color(rng, np.array([(0.35, 0.33, 0.3), (0.45, 0.42, 0.4), (0.3, 0.22, 0.2)]), 0.08),
        grass_rgb=pick_color(rng, np.array([(0.12, 0.2, 0.05), (0.2, 0.22, 0.08)]), 0.1),
        strips=tuple(strips),
        things=tuple(things),
        lighting=lighting,
        camera=camera,
        texture_seed=int(rng.integers(2**31)),
    )
