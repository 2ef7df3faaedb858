"""Ray-cast rendering of a :class:`~madm_ros.synthetic.scene.Scene` into a G-buffer, and RGB shading.

For every pixel the nearest surface wins (a z-buffer over analytic intersections): the ground
plane, the vertical strips along and across the road (façades, walls, fences; along a curved road
they are parabolic cylinders, a quadratic in the ray parameter) and the boxes/ellipsoids of
things, each intersected only inside its projected bounding box. The G-buffer holds what the
sensor models need and nothing else: metric z-depth, class label, material, albedo, a heat offset
and the surface normal. Rays are built with a camera-frame z component of 1, so the ray parameter
of a hit *is* its z-depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from madm_ros.synthetic.scene import SKY, Bend, Junction, Material, Scene, Strip, parts_at

__all__ = ["Camera", "GBuffer", "render", "shade", "value_noise"]

NEAR_M = 0.05
VIEW_M = 170.0
VIEW_SMALL_M = 100.0  # persons, poles, signs and bushes farther than this are a pixel or two
_AXES = np.arange(3)
_F32 = np.float32


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics in pixels (OpenCV convention: pixel centres at integer coordinates)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float) -> Camera:
        """Square pixels, principal point at the image centre, horizontal field of view ``hfov_deg``."""
        f = width / (2 * np.tan(np.radians(hfov_deg) / 2))
        return cls(width, height, float(f), float(f), (width - 1) / 2, (height - 1) / 2)

    def rays(self) -> np.ndarray:
        """Camera-frame ray directions (H, W, 3) float32 with z = 1 (x right, y up, z forward)."""
        x = (np.arange(self.width, dtype=_F32) - _F32(self.cx)) / _F32(self.fx)
        y = -(np.arange(self.height, dtype=_F32) - _F32(self.cy)) / _F32(self.fy)
        rays = np.empty((self.height, self.width, 3), dtype=_F32)
        rays[..., 0] = x[None, :]
        rays[..., 1] = y[:, None]
        rays[..., 2] = 1
        return rays


@dataclass
class GBuffer:
    """Per-pixel surface record of one rendered view (all arrays H×W[×3]).

    ``depth`` is z-depth in metres (``inf`` for sky); ``label`` DSEC-11 ids; ``material``
    :class:`Material` codes; ``albedo`` linear RGB; ``heat`` kelvin above the material baseline;
    ``normal`` unit world normals; ``cell`` a per-window random number in [0, 1) on façade glass;
    ``clouds`` cloud density of sky pixels; ``footprint`` the size of the pixel on the surface
    (metres, larger at grazing angles), which fades out texture detail finer than a pixel so that
    textures do not alias into flicker; ``rays``/``origin`` the world rays and camera centre.
    """

    depth: np.ndarray
    label: np.ndarray
    material: np.ndarray
    albedo: np.ndarray
    heat: np.ndarray
    normal: np.ndarray
    cell: np.ndarray
    clouds: np.ndarray
    footprint: np.ndarray
    rays: np.ndarray
    origin: np.ndarray

    def positions(self) -> np.ndarray:
        """World position of every hit (H, W, 3); sky pixels get the camera centre."""
        depth = np.where(np.isfinite(self.depth), self.depth, 0).astype(_F32)
        return self.origin.astype(_F32) + depth[..., None] * self.rays


def _hash(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    x = (ix * 0x27D4EB2D) ^ (iy * 0x165667B1) ^ (seed * 0x9E3779B1)
    x &= 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
    x ^= x >> 12
    x = (x * 0x297A2D39) & 0xFFFFFFFF
    x ^= x >> 15
    return (x & 0xFFFFFF).astype(_F32) * _F32(1 / 0x1000000)


def cell_hash(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """A random number in [0, 1) per integer cell ``(floor(u), floor(v))``."""
    return _hash(np.floor(u).astype(np.int64), np.floor(v).astype(np.int64), seed)


def value_noise(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1) on a unit lattice (deterministic, vectorised)."""
    fu, fv = np.floor(u), np.floor(v)
    iu, iv = fu.astype(np.int64), fv.astype(np.int64)
    su, sv = (u - fu).astype(_F32), (v - fv).astype(_F32)
    su, sv = su * su * (3 - 2 * su), sv * sv * (3 - 2 * sv)
    a, b = _hash(iu, iv, seed), _hash(iu + 1, iv, seed)
    c, d = _hash(iu, iv + 1, seed), _hash(iu + 1, iv + 1, seed)
    return (a + (b - a) * su) * (1 - sv) + (c + (d - c) * su) * sv


def _new_gbuffer(rays: np.ndarray, origin: np.ndarray) -> GBuffer:
    h, w = rays.shape[:2]
    return GBuffer(
        depth=np.full((h, w), np.inf, dtype=_F32),
        label=np.full((h, w), SKY, dtype=np.uint8),
        material=np.zeros((h, w), dtype=np.uint8),
        albedo=np.zeros((h, w, 3), dtype=_F32),
        heat=np.zeros((h, w), dtype=_F32),
        normal=np.zeros((h, w, 3), dtype=_F32),
        cell=np.zeros((h, w), dtype=_F32),
        clouds=np.zeros((h, w), dtype=_F32),
        footprint=np.zeros((h, w), dtype=_F32),
        rays=rays,
        origin=origin,
    )


def _write(
    g: GBuffer,
    sub: tuple[slice, slice],
    hit: np.ndarray,
    t: np.ndarray,
    label: int | np.ndarray,
    material: int | np.ndarray,
    albedo: object,
    heat: float | np.ndarray,
    normal: object,
) -> np.ndarray:
    """Z-test ``hit`` pixels of window ``sub`` against the buffer and write the winners; returns them."""
    depth = g.depth[sub]
    win = hit & (t < depth)
    if not win.any():
        return win

    def pick(value: object) -> object:
        return value[win] if isinstance(value, np.ndarray) and value.shape[:2] == win.shape else value

    depth[win] = t[win]
    g.label[sub][win] = pick(label)
    g.material[sub][win] = pick(material)
    g.albedo[sub][win] = pick(albedo)
    g.heat[sub][win] = pick(heat)
    g.normal[sub][win] = pick(normal)
    return win


def _ground(g: GBuffer, scene: Scene) -> None:
    o, d = g.origin, g.rays
    down = d[..., 1] < -1e-5
    t = np.where(down, -_F32(o[1]) / np.where(down, d[..., 1], -1), 1e6).astype(_F32)
    x = _F32(o[0]) + t * d[..., 0]
    z = _F32(o[2]) + t * d[..., 2]
    if scene.bend is not None:  # from here on x is the lateral offset from the curved centreline
        x = x - scene.bend.offset(z)
    ax = np.abs(x)
    road = ax < scene.road_half
    side = ax < scene.road_half + scene.sidewalk
    curb = ax < scene.road_half + 0.2
    marking = road & (np.abs(ax - (scene.road_half - 0.35)) < 0.07)
    if scene.centre_line:
        marking |= (ax < 0.07) & (np.mod(z, 9.0) < 3.0)
    if scene.crosswalk_z is not None:
        marking |= road & (z > scene.crosswalk_z) & (z < scene.crosswalk_z + 4) & (np.mod(x, 1.0) < 0.5)
    if scene.junction is not None:
        road, side, curb, marking = _junction_ground(scene.junction, x, z, road, side, curb, marking)
    grass = np.where(x < 0, scene.verge_grass[0], scene.verge_grass[1])
    label = np.where(road, 5, np.where(side | ~grass, 6, 7)).astype(np.uint8)  # road, sidewalk, vegetation
    material = np.where(
        road,
        Material.ASPHALT,
        np.where(curb, Material.CURB, np.where(side | ~grass, Material.PAVING, Material.GRASS)),
    )
    material = np.where(marking, Material.MARKING, material).astype(np.uint8)
    colors = np.zeros((len(Material), 3), dtype=_F32)
    colors[Material.ASPHALT] = scene.asphalt_rgb
    colors[Material.MARKING] = (0.75, 0.75, 0.72)
    colors[Material.CURB] = (0.5, 0.5, 0.48)
    colors[Material.PAVING] = scene.paving_rgb
    colors[Material.GRASS] = scene.grass_rgb
    _write(g, (slice(None), slice(None)), down, t, label, material, colors[material], 0.0, (0.0, 1.0, 0.0))


def _junction_ground(
    junction: Junction, x: np.ndarray, z: np.ndarray, road: np.ndarray, side: np.ndarray, curb: np.ndarray,
    marking: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Add a crossing road to the main road's masks: its carriageway, sidewalks, curbs, edge lines and crosswalks."""
    az = np.abs(z - junction.z)
    cross = az < junction.road_half
    zebra = road & (np.abs(az - (junction.road_half + 2.5)) < 2.0) & (np.mod(x, 1.0) < 0.5)
    edge = cross & ~road & (np.abs(az - (junction.road_half - 0.35)) < 0.07)
    marking = (marking & ~cross) | zebra | edge  # the main road's lines stop at the crossing
    return road | cross, side | (az < junction.road_half + junction.sidewalk), curb | (az < junction.road_half + 0.2), marking


def _strips(g: GBuffer, scene: Scene) -> None:
    flat_rays = g.rays.reshape(-1, 3)
    for strip in scene.strips:
        if len(strip.z0) == 0:
            continue
        if strip.axis == "x" and scene.bend is not None:
            for idx, t in _curved_candidates(g.origin, flat_rays, strip.x, scene.bend):
                _strip_hits(g, scene, strip, idx, t)  # far root first, so a valid near root overwrites it
        else:
            _strip_hits(g, scene, strip, *_plane_candidates(g.origin, flat_rays, strip))


def _plane_candidates(origin: np.ndarray, flat_rays: np.ndarray, strip: Strip) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose ray goes towards the strip's plane, and the ray parameter where it meets it."""
    axis = 0 if strip.axis == "x" else 2
    dx = flat_rays[:, axis]
    toward = (strip.x - origin[axis]) * dx > 1e-7
    idx = np.flatnonzero(toward)
    return idx, _F32(strip.x - origin[axis]) / dx[idx]


def _curved_candidates(
    origin: np.ndarray, flat_rays: np.ndarray, offset: float, bend: Bend
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Where rays meet the surface ``x = offset + bend.offset(z)``: (pixels, ray parameter), far roots then near.

    Along the ray ``x = ox + t dx, z = oz + t dz`` the surface is ``A t² + B t + C = 0``, solved in
    float64 with the cancellation-free form (roots ``q / A`` and ``C / q``).
    """
    d = flat_rays.astype(np.float64)
    a, w = 0.5 * bend.curvature, origin[2] - bend.z0
    qa = a * d[:, 2] ** 2
    qb = 2 * a * w * d[:, 2] - d[:, 0]
    qc = a * w * w + offset - origin[0]
    disc = qb * qb - 4 * qa * qc
    with np.errstate(divide="ignore", invalid="ignore"):
        q = -0.5 * (qb + np.copysign(np.sqrt(np.maximum(disc, 0)), qb))
        r1, r2 = q / qa, qc / q
    r1, r2 = np.where(np.isfinite(r1), r1, np.inf), np.where(np.isfinite(r2), r2, np.inf)
    near, far = np.fmin(r1, r2), np.fmax(r1, r2)
    out = []
    for t in (far, near):
        idx = np.flatnonzero((disc >= 0) & np.isfinite(t) & (t > 1e-6))
        out.append((idx, t[idx].astype(_F32)))
    return out


def _strip_hits(g: GBuffer, scene: Scene, strip: Strip, idx: np.ndarray, t: np.ndarray) -> None:
    """Write the strip where candidate hits (flat pixel ``idx``, ray parameter ``t``) are nearer and on a segment."""
    o, d = g.origin, g.rays
    flat_rays = d.reshape(-1, 3)
    keep = t < g.depth.reshape(-1)[idx]
    idx, t = idx[keep], t[keep]
    y = _F32(o[1]) + t * flat_rays[idx, 1]
    keep = (y >= 0) & (y < strip.height.max())
    idx, t, y = idx[keep], t[keep], y[keep]
    along = 2 if strip.axis == "x" else 0  # the segments' coordinate ("z" below)
    z = _F32(o[along]) + t * flat_rays[idx, along]
    i = np.clip(np.searchsorted(strip.z0, z, side="right") - 1, 0, len(strip.z0) - 1)
    hit = (z >= strip.z0[i]) & (z < strip.z1[i]) & (y < strip.height[i])
    idx, t, y, z, i = idx[hit], t[hit], y[hit], z[hit], i[hit]
    if len(idx) == 0:
        return
    pitch = strip.slat_pitch[i]
    slatted = pitch > 0
    if slatted.any():
        safe = np.where(slatted, pitch, 1)
        gap = np.mod(z, safe) > safe * strip.slat_fill[i]
        rail = (y < 0.12) | (y > strip.height[i] - 0.1)
        solid = ~(slatted & gap & ~rail)
        idx, t, y, z, i = idx[solid], t[solid], y[solid], z[solid], i[solid]
    material, cell = _window_panes(strip, i, y, z, scene.texture_seed)
    rows, cols = np.divmod(idx, d.shape[1])
    g.depth[rows, cols] = t
    g.label[rows, cols] = strip.label[i]
    g.material[rows, cols] = material
    g.albedo[rows, cols] = np.where((material == Material.GLASS)[:, None], _F32(0.04), strip.color[i])
    g.heat[rows, cols] = strip.heat[i]
    g.normal[rows, cols] = _strip_normal(scene, strip, z)
    g.cell[rows, cols] = cell


def _window_panes(
    strip: Strip, i: np.ndarray, y: np.ndarray, z: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Materials of hits on segments ``i`` at height ``y`` and ``z`` along the strip (panes are glass), and pane cells."""
    material = strip.material[i]
    cell = np.zeros_like(y)
    windowed = strip.window_pitch[i] > 0
    if windowed.any():
        fh = np.where(windowed, strip.floor_height[i], 1)
        wp = np.where(windowed, strip.window_pitch[i], 1)
        fy, fz = np.mod(y, fh) / fh, np.mod(z - strip.z0[i], wp) / wp
        lower = (1 - strip.window_height[i]) / 2
        pane = (
            windowed
            & (fy > lower)
            & (fy < lower + strip.window_height[i])
            & (np.abs(fz - 0.5) < strip.window_width[i] / 2)
            & (y > 0.8)
            & (y < strip.height[i] - 0.8)
        )
        material = np.where(pane, Material.GLASS, material)
        cell = np.where(pane, cell_hash(y / fh, (z - strip.z0[i]) / wp + 1000 * i, seed), 0)
    return material, cell


def _strip_normal(scene: Scene, strip: Strip, along: np.ndarray) -> tuple[float, float, float] | np.ndarray:
    """Unit normals of a strip's hits (at ``along`` on the strip), facing the road the strip lines."""
    facing = -float(np.sign(strip.x - strip.facing))
    if strip.axis == "z":
        return (0.0, 0.0, facing)
    if scene.bend is None:
        return (facing, 0.0, 0.0)
    slope = scene.bend.slope(along)
    normal = np.stack([np.ones_like(slope), np.zeros_like(slope), -slope], axis=-1)
    return facing * normal / np.linalg.norm(normal, axis=-1, keepdims=True)


def _things(g: GBuffer, scene: Scene, camera: Camera, rotation: np.ndarray, t_s: float) -> None:
    o = g.origin
    cam_z = o[2]
    inv = None
    parts = []
    for thing in scene.things:
        z_now = thing.z + thing.vz * t_s
        view = VIEW_M if thing.kind in ("car", "tree") else VIEW_SMALL_M
        if z_now + thing.z_hi >= cam_z - 1 and z_now + thing.z_lo <= cam_z + view:
            parts += parts_at(thing, t_s)
    if not parts:
        return
    # Project every part's bounding box at once; draw near to far so hidden parts are skipped.
    lo_all = np.array([p[1] for p in parts])
    hi_all = np.array([p[2] for p in parts])
    upper = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=bool)
    cam = (np.where(upper, hi_all[:, None], lo_all[:, None]) - o) @ rotation
    z = cam[..., 2]
    z_near = z.min(axis=1)
    behind = z < NEAR_M
    with np.errstate(divide="ignore", invalid="ignore"):
        u = camera.fx * cam[..., 0] / z + camera.cx
        v = camera.cy - camera.fy * cam[..., 1] / z
    straddles = behind.any(axis=1)
    c0 = np.where(straddles, 0, np.clip(np.floor(u.min(axis=1)), 0, camera.width)).astype(int)
    c1 = np.where(straddles, camera.width, np.clip(np.ceil(u.max(axis=1)) + 1, 0, camera.width)).astype(int)
    r0 = np.where(straddles, 0, np.clip(np.floor(v.min(axis=1)), 0, camera.height)).astype(int)
    r1 = np.where(straddles, camera.height, np.clip(np.ceil(v.max(axis=1)) + 1, 0, camera.height)).astype(int)
    visible = ~behind.all(axis=1) & (c1 > c0) & (r1 > r0)
    for n in np.flatnonzero(visible)[np.argsort(z_near[visible], kind="stable")]:
        shape, lo, hi, part = parts[n]
        sub = (slice(r0[n], r1[n]), slice(c0[n], c1[n]))
        if z_near[n] >= g.depth[sub].max():  # everything in the window is nearer
            continue
        d = g.rays[sub]
        if shape == "box":
            if inv is None:
                with np.errstate(divide="ignore"):
                    inv = (1 / g.rays).astype(_F32)
            with np.errstate(invalid="ignore"):
                t1 = (lo - o).astype(_F32) * inv[sub]
                t2 = (hi - o).astype(_F32) * inv[sub]
            tmin = np.fmin(t1, t2)
            t_near = tmin.max(axis=-1)
            t_far = np.fmax(t1, t2).min(axis=-1)
            hit = (t_far >= t_near) & (t_near > NEAR_M)
            if not hit.any():
                continue
            axis = tmin.argmax(axis=-1)
            normal = -np.sign(d) * (axis[..., None] == _AXES)
            material: int | np.ndarray = part.material
            if part.top_material >= 0:
                material = np.where(normal[..., 1] > 0.5, part.top_material, part.material).astype(np.uint8)
            _write(g, sub, hit, t_near, part.label, material, part.color, part.heat, normal)
        else:
            centre, radius = (lo + hi) / 2, (hi - lo) / 2
            oc = ((o - centre) / radius).astype(_F32)
            dd = d / radius.astype(_F32)
            a = (dd * dd).sum(-1)
            b = 2 * (dd @ oc)
            c = _F32(oc @ oc - 1)
            disc = b * b - 4 * a * c
            hit = disc >= 0
            if not hit.any():
                continue
            t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
            hit &= t > NEAR_M
            p = (o - centre).astype(_F32) + t[..., None] * d
            normal = p / (radius * radius).astype(_F32)
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-9
            _write(g, sub, hit, t, part.label, part.material, part.color, part.heat, normal)


def sky_clouds(rays: np.ndarray, clouds: float, seed: int) -> np.ndarray:
    """Cloud density in [0, 1] along each ray (a cloud layer over the scene, seen at infinity)."""
    up = np.maximum(rays[..., 1], 0) + _F32(0.04)
    u, v = rays[..., 0] / up, rays[..., 2] / up
    n = 0.65 * value_noise(u * 0.35, v * 0.35, seed) + 0.35 * value_noise(u * 1.1, v * 1.1, seed + 1)
    lo = 1 - clouds - 0.1
    return np.clip((n - lo) / 0.3, 0, 1).astype(_F32)


def render(scene: Scene, camera: Camera, rays_cam: np.ndarray, t_s: float) -> GBuffer:
    """G-buffer of the view at time ``t_s`` seconds; ``rays_cam`` is ``camera.rays()`` (reused across calls)."""
    origin, rotation = scene.camera.pose(t_s)
    rays = rays_cam @ rotation.T.astype(_F32)
    g = _new_gbuffer(np.ascontiguousarray(rays, dtype=_F32), origin)
    _ground(g, scene)
    _strips(g, scene)
    _things(g, scene, camera, rotation, t_s)
    sky = ~np.isfinite(g.depth)
    g.label[sky] = SKY
    g.material[sky] = Material.SKY
    g.clouds[sky] = sky_clouds(g.rays[sky], scene.lighting.clouds, scene.texture_seed)
    length = np.linalg.norm(g.rays, axis=-1)
    facing = np.abs((g.normal * g.rays).sum(-1)) / length
    g.footprint = (np.where(sky, 0, g.depth) * length / (camera.fx * np.maximum(facing, 0.08))).astype(_F32)
    return g


def shade(g: GBuffer, scene: Scene) -> np.ndarray:
    """Linear RGB radiance (H, W, 3) float32 before exposure: textures × (ambient + sun) + emission + sky."""
    light = scene.lighting
    seed = scene.texture_seed
    p = g.positions()
    n = g.normal
    ground = n[..., 1] > 0.5
    u = np.where(ground, p[..., 0], p[..., 0] + p[..., 2])
    v = np.where(ground, p[..., 2], p[..., 1])

    def detail(period: float) -> np.ndarray:
        """1 where texture of this period (metres) is resolved, fading to 0 where a pixel covers half of it."""
        return np.clip((period - 2 * g.footprint) / (0.5 * period), 0, 1)

    fine = 0.5 + (value_noise(u * 9, v * 9, seed + 2) - 0.5) * detail(0.11)
    coarse = value_noise(u * 0.6, v * 0.6, seed + 3)
    m = g.material
    tex = (0.88 + 0.24 * fine).astype(_F32)
    tex = np.where(m == Material.ASPHALT, 0.7 + 0.45 * fine + 0.3 * (coarse - 0.5), tex)
    tiles = (np.mod(u, 0.4) < 0.025) | (np.mod(v, 0.4) < 0.025)
    tex = np.where(
        m == Material.PAVING, np.where(tiles, 0.65, 0.85 + 0.3 * fine) * detail(0.4) + 0.87 * (1 - detail(0.4)), tex
    )
    row = np.floor(v / 0.075)
    mortar = (np.mod(v, 0.075) < 0.012) | (np.mod(u + 0.12 * np.mod(row, 2), 0.24) < 0.012)
    brick = 0.8 + 0.4 * cell_hash(row, np.floor((u + 0.12 * np.mod(row, 2)) / 0.24), seed)
    brick_detail = detail(0.15)
    tex = np.where(m == Material.BRICK, np.where(mortar, 1.5, brick) * brick_detail + 1.05 * (1 - brick_detail), tex)
    tex = np.where(m == Material.PLASTER, 0.8 + 0.35 * coarse + 0.08 * fine, tex)
    tex = np.where(m == Material.CONCRETE, np.where(np.mod(u, 2.0) < 0.03, 0.6, 0.8 + 0.3 * fine), tex)
    tex = np.where((m == Material.FOLIAGE) | (m == Material.GRASS), 0.4 + 1.2 * fine * (0.6 + 0.8 * coarse), tex)
    tex = np.where(m == Material.BARK, 1.0 + 0.8 * (value_noise(u * 3, v * 20, seed + 4) - 0.5) * detail(0.1), tex)
    albedo = g.albedo * tex[..., None].astype(_F32)

    sun = np.asarray(light.sun_rgb, dtype=_F32)
    sun_dir = np.asarray(light.sun_dir, dtype=_F32)
    ambient = np.asarray(light.ambient_rgb, dtype=_F32)
    lit = np.maximum(n @ sun_dir, 0)[..., None] * sun + (0.6 + 0.4 * n[..., 1:2]) * ambient
    radiance = albedo * lit
    horizon, zenith = np.asarray(light.horizon_rgb, dtype=_F32), np.asarray(light.zenith_rgb, dtype=_F32)
    glass = m == Material.GLASS
    if glass.any():  # panes reflect the sky, some are lit from inside at night
        reflect = horizon * (0.15 + 0.25 * coarse[glass, None])
        radiance[glass] += reflect
        if light.night:
            lit_panes = g.cell[glass] > 0.55
            radiance[glass] += np.where(
                lit_panes[:, None], np.array([0.5, 0.38, 0.18], dtype=_F32) * g.cell[glass, None], 0
            )
    lamps = m == Material.LAMP
    if lamps.any():
        radiance[lamps] += g.albedo[lamps] * (3.0 if light.night else 0.3)

    sky = m == Material.SKY
    if sky.any():
        rays = g.rays[sky]
        rays = rays / np.linalg.norm(rays, axis=-1, keepdims=True)
        elevation = np.clip(rays[:, 1], 0, 1)[:, None]
        base = horizon + (zenith - horizon) * np.sqrt(elevation)
        cloud_rgb = (horizon * 1.1 + 0.3 * sun) if not light.night else horizon * 1.3
        c = g.clouds[sky][:, None]
        glow = np.maximum(rays @ sun_dir, 0)[:, None]
        radiance[sky] = base * (1 - c) + cloud_rgb * c + sun * (glow**400 * 8 + glow**8 * 0.15) * (1 - c)
    return radiance.astype(_F32)
