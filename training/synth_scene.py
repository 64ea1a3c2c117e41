"""Procedural driving scenes and a fast numpy/OpenCV renderer of RGB frames with DRIVE label maps.

A `Scene` is sampled once per clip from a random generator (`sample_scene`): road geometry, what stands beside the
road, traffic, and the clip's look (textures, colours, sun, sky, haze, sensor). `SceneRenderer` then renders any
frame of it; the label map comes from the same rasterisation as the image, so the two agree pixel for pixel.

Units and frames: metres, seconds, radians. World axes are x right, y up, z forward (the road's initial direction).
The road's centre line is x = c(z), with gentle curvature that fades to a straight road far ahead. Things are placed
in road coordinates (s, d): s is the distance along the road (taken as z, which the gentle curves allow) and d the
signed offset from the centre line (+ right, perpendicular to the road). Traffic drives on the right. The camera is
a pinhole (OpenCV axes: x right, y down, z forward) with a 60 degree horizontal field of view, about 1.5 m above the
ground, driving along the right lane at the clip's ego speed with a little yaw wobble; frames are `FPS` apart.

Rendering is deferred. All props (buildings, trees, hedges, poles, cars, people, distant skyline) are polygons in 3-D;
they are projected and rasterised far-to-near (painter's algorithm, one key per prop) into a face-index buffer with
cv2.fillPoly. Each pixel's ray is then intersected with its face's plane, or with the ground plane, which gives depth
and world-anchored texture coordinates. Texture therefore sticks to the world, and image motion is exact perspective
motion: the focus of expansion sits ahead, flow grows with nearness and towards the border, and cars with their own
speed move differently from the static scene. Textures are tileable noise images made per clip, pre-blurred into a
few levels that are chosen by each pixel's footprint, so that far texture does not shimmer.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, replace
from enum import IntEnum

import cv2
import numpy as np

from wsvs_ros.labels import DRIVE

FPS = 15.0
"""Frame rate of the rendered clips (Hz); Cityscapes sequences run at 17 Hz, CamVid at 30 Hz."""

HFOV_DEG = 60.0
"""Horizontal field of view of the camera (degrees); the focal length in pixels follows from the image width."""

ROAD, SIDEWALK, VEGETATION, BUILDING, SKY, POLE, CAR, PERSON = (
    DRIVE.by_name(n).id for n in ("road", "sidewalk", "vegetation", "building", "sky", "pole", "car", "person")
)

RGB = tuple[float, float, float]
"""A colour as floats in [0, 1]."""

_NEAR = 0.25  # m; polygons are clipped at this camera depth
_FAR = 3000.0  # m; the ground is cut at this distance, where haze has long hidden it
_TEX = 128  # texels per tile side (a power of two: wrapping is a bit mask)
_LEVELS = 5  # pre-blurred copies of each texture, blur sigma 0, 1, 2, 4, 8 texels
_CURB = 0.25  # m, width of the curb stone between road and sidewalk
_CLOUD_HEIGHT = 1500.0  # m
_CLOUD_TEXEL = 30.0  # m of cloud layer per cloud texel


class Material(IntEnum):
    """Textures of the per-clip atlas. Each has RGB and a paint mask saying where a face's tint applies."""

    ASPHALT = 0
    CURB = 1
    PAVERS = 2
    GRASS = 3
    FOLIAGE = 4
    BARK = 5
    FACADE_A = 6
    FACADE_B = 7
    FACADE_C = 8
    PAINT = 9
    CAR_SIDE = 10
    CAR_REAR = 11
    CAR_FRONT = 12
    GLASS = 13
    METAL = 14
    CLOTH = 15
    SKIN = 16


FACADES = (Material.FACADE_A, Material.FACADE_B, Material.FACADE_C)

# Metres covered by one texture tile, for textures laid out in metric units (cars and facades set their own scale).
_TILE_M = {
    Material.ASPHALT: 6.0,
    Material.CURB: 2.0,
    Material.GRASS: 2.5,
    Material.FOLIAGE: 2.5,
    Material.BARK: 1.5,
    Material.PAINT: 2.0,
    Material.METAL: 1.0,
    Material.CLOTH: 0.8,
    Material.SKIN: 0.4,
}


def _per_m(material: Material) -> tuple[float, float]:
    """Texels per metre along u and v for a metric material."""
    k = _TEX / _TILE_M[material]
    return (k, k)


# ---------------------------------------------------------------------------------------------------------------------
# Scene description


@dataclass(frozen=True)
class Facade:
    """One facade style: wall and glass colours, window grid in metres and window size as fractions of a bay."""

    wall: RGB
    glass: RGB
    bay: float
    floor: float
    window_w: float
    window_h: float
    ribbon: bool  # continuous window bands (offices) instead of punched windows


@dataclass(frozen=True)
class Look:
    """Appearance of one clip: materials, sky, sun, haze and sensor."""

    asphalt: RGB
    marking: RGB
    centre_marking: RGB
    curb: RGB
    pavers: RGB
    paver_size: float  # m
    brick_bond: bool  # pavers laid in offset rows
    grass: RGB
    grass_dry: RGB
    foliage: tuple[RGB, RGB]
    bark: RGB
    facades: tuple[Facade, Facade, Facade]
    sky_zenith: RGB
    sky_horizon: RGB
    cloud_cover: float  # 0 (clear) .. 1 (overcast)
    cloud: RGB
    sun: tuple[float, float, float]  # unit vector towards the sun, world axes
    sun_strength: float
    ambient: float
    cast: RGB  # white balance gains
    exposure: float
    haze: float  # m; contrast halves every haze * ln 2 metres
    noise: float  # sensor noise std in [0, 1] units
    blur: float  # px, sigma of the lens/demosaic blur


@dataclass(frozen=True)
class Road:
    """Cross-section and course of the road. Outer lanes of a four-lane road carry traffic or parked cars."""

    lane_width: float  # m
    lanes_each_way: int  # 1 or 2
    curvature: float  # 1/m, constant part of the centre line's curvature
    curvature_wave: float  # 1/m, amplitude of its sinusoidal part
    wavelength: float  # m
    phase: float  # rad
    centre_line: str  # "dashed", "solid" or "double"
    edge_lines: bool
    marking_wear: float  # 0 (fresh paint) .. 1 (gone)

    @property
    def half_width(self) -> float:
        return self.lanes_each_way * self.lane_width


@dataclass(frozen=True)
class Side:
    """Ground bands on one side of the road, outwards from the road edge: curb, grass verge, sidewalk, beyond."""

    sidewalk: float  # m; 0 = no sidewalk (and no curb)
    verge: float  # m of grass between the curb (or road edge) and the sidewalk
    paved_beyond: bool  # beyond the sidewalk: paved plaza (sidewalk class) or lawn (vegetation)

    def edges(self, half_width: float) -> tuple[float, float, float]:
        """|d| where the curb, the verge and the sidewalk end (m from the centre line)."""
        curb_end = half_width + (_CURB if self.sidewalk > 0 else 0.0)
        verge_end = curb_end + self.verge
        return curb_end, verge_end, verge_end + self.sidewalk


@dataclass(frozen=True)
class Ego:
    """The camera car."""

    speed: float  # m/s
    height: float  # m, camera above the ground
    lateral: float  # m, offset from the centre of the right lane
    pitch: float  # rad, + up
    wobble: float  # rad, amplitude of the yaw wobble about the road direction
    wobble_freq: float  # Hz
    wobble_phase: float  # rad


@dataclass(frozen=True, eq=False)
class Face:
    """A planar polygon of a prop, in the prop's local frame (x right of the road direction, y up, z along it).

    Texture coordinates are metres along `u_axis` and `v_axis` from `origin`, times `scale` (texels per metre), plus
    `offset` (texels). The face's normal is u x v; faces seen from behind are culled unless `two_sided`. A face with
    `swing` rotates about the local x axis through `pivot` (y, z) by swing * sin(2 pi gait t + swing_phase): limbs.
    """

    polygon: np.ndarray  # (k, 3) m
    origin: np.ndarray  # (3,) m
    u_axis: np.ndarray  # (3,) unit
    v_axis: np.ndarray  # (3,) unit
    class_id: int
    material: Material
    scale: tuple[float, float]
    tint: RGB = (1.0, 1.0, 1.0)
    offset: tuple[float, float] = (0.0, 0.0)
    two_sided: bool = False
    swing: float = 0.0
    swing_phase: float = 0.0
    pivot: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True, eq=False)
class Prop:
    """A rigid thing at road position (s, d) that moves along the road at `speed` (m/s, + forward).

    `reverse` turns it to face against the road direction (oncoming cars). `half_length` (m along the road) and
    `shadow` (half width, half length in m; zeros = none) serve depth ordering and the contact shadow.
    """

    s: float
    d: float
    faces: tuple[Face, ...]
    speed: float = 0.0
    reverse: bool = False
    half_length: float = 0.0
    gait: float = 0.0  # Hz of swinging faces
    shadow: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True, eq=False)
class Scene:
    """Everything needed to render a clip; sampled by `sample_scene`, rendered by `SceneRenderer`."""

    road: Road
    left: Side
    right: Side
    ego: Ego
    look: Look
    props: tuple[Prop, ...]
    texture_seed: int
    noise_seed: int

    @property
    def camera_d(self) -> float:
        """The camera's offset from the centre line (m, + right): the middle of the right lane, plus `ego.lateral`."""
        return self.road.lane_width / 2 + self.ego.lateral


# ---------------------------------------------------------------------------------------------------------------------
# Geometry helpers


def _vec(x: float, y: float, z: float) -> np.ndarray:
    return np.array([x, y, z], np.float64)


_X, _Y, _Z = _vec(1, 0, 0), _vec(0, 1, 0), _vec(0, 0, 1)


def _quad(
    origin: np.ndarray,
    u_axis: np.ndarray,
    v_axis: np.ndarray,
    extent: tuple[float, float],
    *,
    class_id: int,
    material: Material,
    scale: tuple[float, float] | None,
    tint: RGB = (1.0, 1.0, 1.0),
    offset: tuple[float, float] = (0.0, 0.0),
    swing: float = 0.0,
    swing_phase: float = 0.0,
    pivot: tuple[float, float] = (0.0, 0.0),
) -> Face:
    """A rectangle from `origin` spanning extent[0] m along u and extent[1] m along v. scale=None fits one tile."""
    a, b = extent
    polygon = np.stack([origin, origin + a * u_axis, origin + a * u_axis + b * v_axis, origin + b * v_axis])
    if scale is None:
        scale = (_TEX / a, _TEX / b)
    return Face(
        polygon,
        origin,
        u_axis,
        v_axis,
        class_id,
        material,
        scale,
        tint=tint,
        offset=offset,
        swing=swing,
        swing_phase=swing_phase,
        pivot=pivot,
    )


def _box(
    centre: tuple[float, float, float],
    size: tuple[float, float, float],
    *,
    class_id: int,
    materials: dict[str, Material],
    scale: tuple[float, float] | None,
    tint: RGB = (1.0, 1.0, 1.0),
    offset: tuple[float, float] = (0.0, 0.0),
    swing: float = 0.0,
    swing_phase: float = 0.0,
    pivot: tuple[float, float] = (0.0, 0.0),
) -> list[Face]:
    """Faces of an axis-aligned box standing on y = centre[1], size (width x, height y, length z).

    `materials` maps the faces to draw ("rear" faces -z, "front" +z, "left", "right", "top") to their material; the
    bottom is never seen. Texture v runs down from each face's top edge so facade floors line up with the roof.
    """
    cx, y0, cz = centre
    w, h, length = size
    x0, x1, y1, z0, z1 = cx - w / 2, cx + w / 2, y0 + h, cz - length / 2, cz + length / 2
    layout = {
        "rear": (_vec(x0, y1, z0), _X, -_Y, (w, h)),
        "front": (_vec(x1, y1, z1), -_X, -_Y, (w, h)),
        "right": (_vec(x1, y1, z0), _Z, -_Y, (length, h)),
        "left": (_vec(x0, y1, z1), -_Z, -_Y, (length, h)),
        "top": (_vec(x0, y1, z1), _X, -_Z, (w, length)),
    }
    return [
        _quad(
            *layout[name],
            class_id=class_id,
            material=mat,
            scale=scale,
            tint=tint,
            offset=offset,
            swing=swing,
            swing_phase=swing_phase,
            pivot=pivot,
        )
        for name, mat in materials.items()
    ]


def _blob(
    rng: np.random.Generator,
    centre: tuple[float, float, float],
    radii: tuple[float, float],
    *,
    class_id: int,
    material: Material,
    tint: RGB,
    flat_bottom: bool = False,
) -> Face:
    """A two-sided irregular ellipse facing along the road (tree crowns, distant tree lines)."""
    n = 20
    angle = np.linspace(0, 2 * np.pi, n, endpoint=False)
    wobble = 1 + sum(rng.uniform(0.03, 0.12) * np.sin(k * angle + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    x = centre[0] + radii[0] * wobble * np.cos(angle)
    y = centre[1] + radii[1] * wobble * np.sin(angle)
    if flat_bottom:
        y = np.maximum(y, centre[1])
    polygon = np.stack([x, y, np.full(n, centre[2])], axis=1)
    origin = _vec(centre[0] - radii[0] * 1.5, centre[1] + radii[1] * 1.5, centre[2])
    offset = (float(rng.uniform(0, _TEX)), float(rng.uniform(0, _TEX)))
    return Face(polygon, origin, _X, -_Y, class_id, material, _per_m(material), tint, offset, two_sided=True)


def _jitter(rng: np.random.Generator, amount: float) -> RGB:
    """A tint near white: per-channel gains within 1 +- amount."""
    r, g, b = rng.uniform(1 - amount, 1 + amount, 3)
    return (float(r), float(g), float(b))


def _hsv(h: float, s: float, v: float) -> RGB:
    return colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))


def _mix(a: RGB, b: RGB, w: float) -> RGB:
    return (a[0] + (b[0] - a[0]) * w, a[1] + (b[1] - a[1]) * w, a[2] + (b[2] - a[2]) * w)


# ---------------------------------------------------------------------------------------------------------------------
# Props


def car_prop(rng: np.random.Generator, *, s: float, d: float, speed: float, reverse: bool) -> Prop:
    """A car (body and glass cabin boxes) at road position (s, d) m, driving at `speed` m/s along the road.

    `reverse` turns it to face oncoming (speed is still measured along the road, so oncoming cars have speed < 0).
    """
    palette = (
        _hsv(0, 0, rng.uniform(0.05, 0.2)),  # black
        _hsv(0, 0, rng.uniform(0.7, 0.95)),  # white
        _hsv(0, 0, rng.uniform(0.35, 0.6)),  # grey / silver
        _hsv(rng.uniform(-0.03, 0.03), rng.uniform(0.6, 0.9), rng.uniform(0.4, 0.8)),  # red
        _hsv(rng.uniform(0.55, 0.68), rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.7)),  # blue
        _hsv(rng.uniform(0.22, 0.42), rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.6)),  # green
        _hsv(rng.uniform(0.08, 0.15), rng.uniform(0.3, 0.8), rng.uniform(0.4, 0.85)),  # beige / yellow
    )
    colour = palette[rng.choice(len(palette), p=[0.2, 0.2, 0.25, 0.1, 0.1, 0.07, 0.08])]
    width, length = rng.uniform(1.7, 1.95), rng.uniform(3.9, 4.9)
    van = rng.random() < 0.15
    body_top = rng.uniform(0.9, 1.0) if not van else rng.uniform(1.3, 1.6)
    cabin_top = body_top + (rng.uniform(0.45, 0.55) if not van else rng.uniform(0.35, 0.5))
    cabin_len = length * (rng.uniform(0.45, 0.55) if not van else 0.7)
    cabin_z = -length * rng.uniform(0.02, 0.1) if not van else -length * 0.1
    body = _box(
        (0.0, 0.15, 0.0),
        (width, body_top - 0.15, length),
        class_id=CAR,
        materials={
            "rear": Material.CAR_REAR,
            "front": Material.CAR_FRONT,
            "left": Material.CAR_SIDE,
            "right": Material.CAR_SIDE,
            "top": Material.PAINT,
        },
        scale=None,
        tint=colour,
    )
    cabin = _box(
        (0.0, body_top, cabin_z),
        (width - 0.12, cabin_top - body_top, cabin_len),
        class_id=CAR,
        materials={"rear": Material.GLASS, "front": Material.GLASS, "left": Material.GLASS, "right": Material.GLASS},
        scale=None,
        tint=colour,
    )
    roof = _box(
        (0.0, cabin_top - 0.02, cabin_z),
        (width - 0.14, 0.02, cabin_len - 0.04),
        class_id=CAR,
        materials={"top": Material.PAINT},
        scale=None,
        tint=colour,
    )
    return Prop(
        s=s,
        d=d,
        faces=tuple(body + cabin + roof),
        speed=speed,
        reverse=reverse,
        half_length=length / 2,
        shadow=(width / 2 + 0.1, length / 2 + 0.1),
    )


def _person(rng: np.random.Generator, *, s: float, d: float, speed: float) -> Prop:
    """A pedestrian of boxes (legs and arms swinging while walking) at (s, d) m, walking at `speed` m/s."""
    height = rng.uniform(1.55, 1.9)
    k = height / 1.75
    shirt = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.8), rng.uniform(0.15, 0.9))
    trousers = _hsv(rng.uniform(0.55, 0.7), rng.uniform(0, 0.6), rng.uniform(0.1, 0.5))
    skin = _hsv(rng.uniform(0.04, 0.09), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.95))
    walking = speed != 0.0
    hip, shoulder = 0.85 * k, 1.45 * k
    sides = {"rear": Material.CLOTH, "front": Material.CLOTH, "left": Material.CLOTH, "right": Material.CLOTH}
    faces: list[Face] = []
    for x, phase in ((-0.1, 0.0), (0.1, np.pi)):
        faces += _box(
            (x * k, 0.0, 0.0),
            (0.14 * k, hip, 0.16),
            class_id=PERSON,
            materials=sides,
            scale=_per_m(Material.CLOTH),
            tint=trousers,
            swing=0.4 if walking else 0.0,
            swing_phase=phase,
            pivot=(hip, 0.0),
        )
    faces += _box(
        (0.0, hip, 0.0),
        (0.4 * k, shoulder - hip + 0.05, 0.24),
        class_id=PERSON,
        materials={**sides, "top": Material.CLOTH},
        scale=_per_m(Material.CLOTH),
        tint=shirt,
    )
    for x, phase in ((-0.25, np.pi), (0.25, 0.0)):
        faces += _box(
            (x * k, shoulder - 0.6 * k, 0.0),
            (0.09 * k, 0.6 * k, 0.1),
            class_id=PERSON,
            materials=sides,
            scale=_per_m(Material.CLOTH),
            tint=shirt,
            swing=0.3 if walking else 0.0,
            swing_phase=phase,
            pivot=(shoulder, 0.0),
        )
    skin_faces = {"rear": Material.SKIN, "front": Material.SKIN, "left": Material.SKIN, "right": Material.SKIN}
    faces += _box(
        (0.0, shoulder + 0.05, 0.0),
        (0.2 * k, height - shoulder - 0.05, 0.22),
        class_id=PERSON,
        materials={**skin_faces, "top": Material.SKIN},
        scale=_per_m(Material.SKIN),
        tint=skin,
    )
    return Prop(
        s=s,
        d=d,
        faces=tuple(faces),
        speed=speed,
        reverse=speed < 0,
        half_length=0.15,
        gait=abs(speed) / 1.5,
        shadow=(0.3, 0.25),
    )


def _building(rng: np.random.Generator, look: Look, *, s: float, d: float, size: tuple[float, float, float]) -> Prop:
    """A building box with centre (s, d) and size (depth across the road, height, length along it), in metres."""
    k = int(rng.integers(3))
    facade = look.facades[k]
    scale = (_TEX / (4 * facade.bay), _TEX / (4 * facade.floor))
    faces = _box(
        (0.0, 0.0, 0.0),
        size,
        class_id=BUILDING,
        materials=dict.fromkeys(("rear", "front", "left", "right"), FACADES[k]),
        scale=scale,
        tint=_jitter(rng, 0.1),
        offset=(float(rng.integers(4)) * _TEX / 4, 0.0),
    )
    return Prop(s=s, d=d, faces=tuple(faces), half_length=size[2] / 2)


def _tree(rng: np.random.Generator, look: Look, *, s: float, d: float) -> Prop:
    """A trunk and one or two foliage blobs; crowns lean neither way so they overhang road and sidewalk alike."""
    trunk_h = rng.uniform(1.8, 3.2)
    radius = rng.uniform(1.5, 3.2)
    tint = _jitter(rng, 0.15)
    faces = _box(
        (0.0, 0.0, 0.0),
        (rng.uniform(0.2, 0.4), trunk_h + radius * 0.5, rng.uniform(0.2, 0.4)),
        class_id=VEGETATION,
        materials={"rear": Material.BARK, "front": Material.BARK, "left": Material.BARK, "right": Material.BARK},
        scale=_per_m(Material.BARK),
    )
    centre_y = trunk_h + radius * rng.uniform(0.8, 1.0)
    for _ in range(1 + int(rng.random() < 0.6)):
        dx, dy, dz = rng.uniform(-0.4, 0.4) * radius, rng.uniform(-0.2, 0.2) * radius, rng.uniform(-0.5, 0.5)
        r = radius * rng.uniform(0.7, 1.0)
        faces.append(
            _blob(
                rng,
                (dx, centre_y + dy, dz),
                (r, r * rng.uniform(0.8, 1.2)),
                class_id=VEGETATION,
                material=Material.FOLIAGE,
                tint=tint,
            )
        )
    return Prop(s=s, d=d, faces=tuple(faces), half_length=radius)


def _hedge(rng: np.random.Generator, *, s: float, d: float, length: float) -> Prop:
    """A hedge `length` m long along the road, centred at (s, d) m."""
    size = (rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.7), length)
    faces = _box(
        (0.0, 0.0, 0.0),
        size,
        class_id=VEGETATION,
        materials=dict.fromkeys(("rear", "front", "left", "right", "top"), Material.FOLIAGE),
        scale=_per_m(Material.FOLIAGE),
        tint=_jitter(rng, 0.12),
        offset=(float(rng.uniform(0, _TEX)), float(rng.uniform(0, _TEX))),
    )
    return Prop(s=s, d=d, faces=tuple(faces), half_length=length / 2)


def _street_lamp(rng: np.random.Generator, *, s: float, d: float, colour: RGB) -> Prop:
    """A pole with an arm reaching over the road (towards -x in its frame on the right, +x on the left)."""
    height = rng.uniform(6.0, 9.0)
    towards_road = -1.0 if d > 0 else 1.0
    arm = rng.uniform(1.0, 2.5)
    sides = dict.fromkeys(("rear", "front", "left", "right"), Material.METAL)
    faces = _box(
        (0.0, 0.0, 0.0),
        (0.18, height, 0.18),
        class_id=POLE,
        materials={**sides, "top": Material.METAL},
        scale=_per_m(Material.METAL),
        tint=colour,
    )
    faces += _box(
        (towards_road * arm / 2, height - 0.15, 0.0),
        (arm, 0.1, 0.1),
        class_id=POLE,
        materials={**sides, "top": Material.METAL},
        scale=_per_m(Material.METAL),
        tint=colour,
    )
    faces += _box(
        (towards_road * arm, height - 0.3, 0.0),
        (0.5, 0.18, 0.25),
        class_id=POLE,
        materials={**sides, "top": Material.METAL},
        scale=_per_m(Material.METAL),
        tint=colour,
    )
    return Prop(s=s, d=d, faces=tuple(faces), half_length=0.1)


def _sign_pole(rng: np.random.Generator, *, s: float, d: float, colour: RGB) -> Prop:
    """A bare post (the sign it carries is left out: DRIVE has no sign class)."""
    height = rng.uniform(2.5, 4.0)
    faces = _box(
        (0.0, 0.0, 0.0),
        (0.08, height, 0.08),
        class_id=POLE,
        materials=dict.fromkeys(("rear", "front", "left", "right", "top"), Material.METAL),
        scale=_per_m(Material.METAL),
        tint=colour,
    )
    return Prop(s=s, d=d, faces=tuple(faces), half_length=0.05)


# ---------------------------------------------------------------------------------------------------------------------
# Sampling a scene


def _sample_look(rng: np.random.Generator) -> Look:
    """Per-clip appearance. Colours overlap between classes on purpose (green facades, brown foliage, red pavers)."""
    weather = rng.choice(4, p=[0.45, 0.2, 0.25, 0.1])  # clear, hazy, overcast, low sun
    elevation = math.radians(
        (rng.uniform(25, 65), rng.uniform(20, 60), rng.uniform(30, 70), rng.uniform(6, 15))[weather]
    )
    azimuth = rng.uniform(0, 2 * np.pi)
    sun = (math.cos(elevation) * math.sin(azimuth), math.sin(elevation), math.cos(elevation) * math.cos(azimuth))
    sun_strength = (rng.uniform(0.75, 1.0), rng.uniform(0.5, 0.75), rng.uniform(0.1, 0.25), rng.uniform(0.6, 0.9))[
        weather
    ]
    ambient = (rng.uniform(0.35, 0.5), rng.uniform(0.45, 0.6), rng.uniform(0.75, 0.9), rng.uniform(0.3, 0.45))[weather]
    zenith = (
        _hsv(rng.uniform(0.57, 0.62), rng.uniform(0.45, 0.7), rng.uniform(0.75, 0.95)),
        _hsv(rng.uniform(0.55, 0.62), rng.uniform(0.2, 0.35), rng.uniform(0.8, 0.95)),
        _hsv(rng.uniform(0.55, 0.65), rng.uniform(0.0, 0.08), rng.uniform(0.6, 0.85)),
        _hsv(rng.uniform(0.58, 0.65), rng.uniform(0.35, 0.6), rng.uniform(0.55, 0.8)),
    )[weather]
    horizon = (
        _hsv(rng.uniform(0.55, 0.6), rng.uniform(0.08, 0.25), rng.uniform(0.9, 1.0)),
        _hsv(rng.uniform(0.1, 0.6), rng.uniform(0.04, 0.15), rng.uniform(0.85, 0.98)),
        _hsv(rng.uniform(0.55, 0.65), rng.uniform(0.0, 0.05), rng.uniform(0.75, 0.9)),
        _hsv(rng.uniform(0.04, 0.1), rng.uniform(0.3, 0.5), rng.uniform(0.9, 1.0)),
    )[weather]
    cloud_cover = (rng.uniform(0, 0.35), rng.uniform(0.2, 0.5), rng.uniform(0.7, 1.0), rng.uniform(0.1, 0.5))[weather]
    haze = (rng.uniform(500, 1200), rng.uniform(150, 400), rng.uniform(250, 600), rng.uniform(300, 800))[weather]

    autumn = rng.random() < 0.3
    dry = rng.random() < 0.3
    green = rng.uniform(0.2, 0.38)
    foliage = (
        (
            _hsv(rng.uniform(0.03, 0.12), rng.uniform(0.5, 0.85), rng.uniform(0.3, 0.6)),
            _hsv(rng.uniform(0.05, 0.16), rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.5)),
        )
        if autumn
        else (
            _hsv(green, rng.uniform(0.4, 0.8), rng.uniform(0.2, 0.45)),
            _hsv(green + rng.uniform(-0.05, 0.05), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.4)),
        )
    )
    grass = (
        _hsv(rng.uniform(0.1, 0.17), rng.uniform(0.3, 0.6), rng.uniform(0.35, 0.6))
        if dry
        else _hsv(rng.uniform(0.2, 0.32), rng.uniform(0.4, 0.75), rng.uniform(0.3, 0.55))
    )
    grass_dry = _hsv(rng.uniform(0.08, 0.14), rng.uniform(0.3, 0.55), rng.uniform(0.35, 0.6))

    asphalt_v = rng.uniform(0.15, 0.5)
    asphalt = _hsv(rng.uniform(0.0, 0.7), rng.uniform(0.0, 0.12), asphalt_v)
    paver_kind = rng.choice(3, p=[0.5, 0.3, 0.2])  # grey concrete, red brick, beige stone
    pavers = (
        _hsv(rng.uniform(0, 1), rng.uniform(0, 0.06), rng.uniform(0.4, 0.75)),
        _hsv(rng.uniform(0.98, 1.04), rng.uniform(0.3, 0.6), rng.uniform(0.35, 0.65)),
        _hsv(rng.uniform(0.08, 0.13), rng.uniform(0.15, 0.35), rng.uniform(0.5, 0.8)),
    )[paver_kind]
    white = rng.uniform(0.75, 0.95)

    def facade() -> Facade:
        kind = rng.choice(6, p=[0.25, 0.2, 0.2, 0.15, 0.1, 0.1])
        wall = (
            _hsv(rng.uniform(0, 1), rng.uniform(0, 0.08), rng.uniform(0.35, 0.85)),  # grey / white render
            _hsv(rng.uniform(0.0, 0.05), rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.6)),  # brick
            _hsv(rng.uniform(0.07, 0.14), rng.uniform(0.2, 0.45), rng.uniform(0.55, 0.9)),  # sand / ochre
            _hsv(rng.uniform(0.2, 0.45), rng.uniform(0.15, 0.45), rng.uniform(0.35, 0.7)),  # greenish
            _hsv(rng.uniform(0.5, 0.65), rng.uniform(0.15, 0.4), rng.uniform(0.35, 0.75)),  # bluish
            _hsv(rng.uniform(0.9, 1.0), rng.uniform(0.15, 0.4), rng.uniform(0.4, 0.8)),  # pink / mauve
        )[kind]
        glass = _hsv(rng.uniform(0.5, 0.65), rng.uniform(0.1, 0.4), rng.uniform(0.1, 0.45))
        return Facade(
            wall=wall,
            glass=glass,
            bay=rng.uniform(2.5, 4.0),
            floor=rng.uniform(2.8, 3.6),
            window_w=rng.uniform(0.3, 0.7),
            window_h=rng.uniform(0.4, 0.7),
            ribbon=bool(rng.random() < 0.2),
        )

    cast = rng.uniform(0.88, 1.12, 3)
    cast /= cast.mean()
    return Look(
        asphalt=asphalt,
        marking=(white, white, white * rng.uniform(0.9, 1.0)),
        centre_marking=_hsv(rng.uniform(0.11, 0.14), rng.uniform(0.6, 0.9), rng.uniform(0.7, 0.9))
        if rng.random() < 0.3
        else (white, white, white),
        curb=_hsv(rng.uniform(0, 1), rng.uniform(0, 0.05), rng.uniform(0.55, 0.85)),
        pavers=pavers,
        paver_size=rng.uniform(0.25, 0.6),
        brick_bond=bool(rng.random() < 0.5),
        grass=grass,
        grass_dry=grass_dry,
        foliage=foliage,
        bark=_hsv(rng.uniform(0.05, 0.1), rng.uniform(0.2, 0.5), rng.uniform(0.15, 0.35)),
        facades=(facade(), facade(), facade()),
        sky_zenith=zenith,
        sky_horizon=horizon,
        cloud_cover=float(cloud_cover),
        cloud=_hsv(0.6, rng.uniform(0, 0.05), rng.uniform(0.8, 1.0) if weather != 2 else rng.uniform(0.55, 0.8)),
        sun=sun,
        sun_strength=float(sun_strength),
        ambient=float(ambient),
        cast=(float(cast[0]), float(cast[1]), float(cast[2])),
        exposure=float(rng.uniform(0.85, 1.15)),
        haze=float(haze),
        noise=float(rng.uniform(0.006, 0.02)),
        blur=float(rng.uniform(0.5, 0.9)),
    )


def _side_props(
    rng: np.random.Generator,
    look: Look,
    road: Road,
    side: Side,
    sign: float,
    *,
    buildings: bool,
    trees: bool,
    hedges: bool,
    poles: bool,
    people: bool,
    s_range: tuple[float, float],
) -> list[Prop]:
    """Buildings, trees, hedges, poles and pedestrians on one side (sign -1 left, +1 right) over s_range (m)."""
    curb_end, verge_end, walk_end = side.edges(road.half_width)
    s_lo, s_hi = s_range
    props: list[Prop] = []
    if buildings:
        base = walk_end + (rng.uniform(0.0, 2.0) if side.paved_beyond else rng.uniform(2.0, 10.0))
        s = s_lo + rng.uniform(-10, 0)
        while s < s_hi:
            length = rng.uniform(8, 30)
            depth = rng.uniform(8, 16)
            height = rng.uniform(6, 24) if rng.random() > 0.1 else rng.uniform(25, 45)
            setback = base + rng.uniform(0, 4)
            props.append(
                _building(rng, look, s=s + length / 2, d=sign * (setback + depth / 2), size=(depth, height, length))
            )
            s += length + (rng.uniform(0, 4) if rng.random() < 0.8 else rng.uniform(5, 15))
    if trees:
        if side.verge >= 1.0:
            tree_d = curb_end + side.verge / 2
        elif side.sidewalk >= 2.5:
            tree_d = curb_end + 0.8
        else:
            tree_d = walk_end + rng.uniform(1.0, 3.0)
        s = s_lo + rng.uniform(0, 10)
        spacing = rng.uniform(7, 18)
        while s < s_hi:
            if rng.random() < 0.85:
                props.append(_tree(rng, look, s=s, d=sign * (tree_d + rng.uniform(-0.2, 0.2))))
            s += spacing * rng.uniform(0.8, 1.2)
    if hedges:
        s = s_lo + rng.uniform(0, 20)
        while s < s_hi:
            length = rng.uniform(5, 25)
            props.append(_hedge(rng, s=s + length / 2, d=sign * (walk_end + 0.7), length=length))
            s += length + rng.uniform(3, 25)
    if poles:
        colour = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.3), rng.uniform(0.2, 0.7))
        pole_d = road.half_width + (0.5 if side.sidewalk > 0 else max(side.verge / 2, 0.6))
        s = s_lo + rng.uniform(0, 20)
        spacing = rng.uniform(20, 40)
        while s < s_hi:
            props.append(_street_lamp(rng, s=s, d=sign * pole_d, colour=colour))
            if rng.random() < 0.4:
                props.append(_sign_pole(rng, s=s + rng.uniform(4, 12), d=sign * pole_d, colour=colour))
            s += spacing
    if people and side.sidewalk > 0:
        count = rng.poisson((s_hi - s_lo) / 25)
        for _ in range(count):
            walking = rng.random() < 0.7
            speed = float(rng.uniform(0.9, 1.6) * rng.choice((-1.0, 1.0))) if walking else 0.0
            d = verge_end + rng.uniform(0.35, max(side.sidewalk - 0.35, 0.4))
            props.append(_person(rng, s=float(rng.uniform(s_lo + 5, s_hi)), d=sign * d, speed=speed))
    return props


def _lane(
    rng: np.random.Generator,
    *,
    d: float,
    speed: float,
    reverse: bool,
    s_from: float,
    s_to: float,
    gaps: tuple[float, float],
) -> list[Prop]:
    """Cars in one lane from s_from to s_to (m), all at one speed, `gaps` (m) apart bumper to bumper."""
    cars: list[Prop] = []
    s = s_from
    while s < s_to:
        car = car_prop(rng, s=s, d=d + rng.uniform(-0.2, 0.2), speed=speed, reverse=reverse)
        cars.append(car)
        s += 2 * car.half_length + rng.uniform(*gaps)
    return cars


def _traffic(rng: np.random.Generator, road: Road, ego: Ego, *, duration: float, s_end: float) -> list[Prop]:
    """Moving and parked cars; none ever runs into the camera car during `duration` seconds."""
    w = road.lane_width
    cars: list[Prop] = []
    moving = rng.random() < 0.75
    if moving and rng.random() < 0.6:
        # A lead car in the ego lane, far enough ahead that it stays > 8 m away for the whole clip.
        speed = ego.speed * rng.uniform(0.85, 1.15)
        start = 8 + max(0.0, (ego.speed - speed) * duration) + rng.uniform(4, 25)
        cars += _lane(rng, d=w / 2, speed=speed, reverse=False, s_from=start, s_to=s_end + 200, gaps=(8, 40))
    if moving and rng.random() < 0.85:
        speed = -rng.uniform(6, 15)
        far = s_end + 250 - speed * duration
        cars += _lane(rng, d=-w / 2, speed=speed, reverse=True, s_from=rng.uniform(0, 30), s_to=far, gaps=(10, 60))
    if road.lanes_each_way == 2:
        for sign in (-1.0, 1.0):
            if rng.random() < 0.5:
                parked = _lane(
                    rng, d=sign * 1.5 * w, speed=0.0, reverse=False, s_from=-20, s_to=s_end + 200, gaps=(1, 12)
                )
                cars += [replace(c, reverse=bool(rng.random() < 0.3)) for c in parked if rng.random() < 0.7]
            elif moving:
                if sign > 0:
                    speed = ego.speed * rng.uniform(0.6, 1.4)
                    cars += _lane(
                        rng, d=1.5 * w, speed=speed, reverse=False, s_from=-60, s_to=s_end + 200, gaps=(8, 50)
                    )
                else:
                    speed = -rng.uniform(6, 15)
                    far = s_end + 250 - speed * duration
                    cars += _lane(rng, d=-1.5 * w, speed=speed, reverse=True, s_from=0, s_to=far, gaps=(10, 60))
    return cars


def _backdrop(rng: np.random.Generator, look: Look, *, buildings: bool, trees: bool, s_from: float) -> list[Prop]:
    """Distant skyline and tree lines far from the road, so the horizon is not an empty plain."""
    props: list[Prop] = []
    for sign in (-1.0, 1.0):
        s = s_from
        while s < s_from + 700:  # haze hides what lies further
            d = sign * rng.uniform(30, 250)
            if buildings and (not trees or rng.random() < 0.6):
                size = (rng.uniform(15, 40), rng.uniform(8, 50), rng.uniform(20, 60))
                props.append(_building(rng, look, s=s, d=d + sign * size[0] / 2, size=size))
            elif trees:
                width = rng.uniform(15, 60)
                blob = _blob(
                    rng,
                    (0.0, 0.0, 0.0),
                    (width / 2, rng.uniform(6, 16)),
                    class_id=VEGETATION,
                    material=Material.FOLIAGE,
                    tint=_jitter(rng, 0.15),
                    flat_bottom=True,
                )
                props.append(Prop(s=s, d=d, faces=(blob,), half_length=1.0))
            s += rng.uniform(15, 50)
    return props


def sample_scene(rng: np.random.Generator, *, duration: float) -> Scene:
    """A random driving scene for a clip of `duration` seconds.

    Not every class is in every scene: about a quarter have no buildings (country roads), some have no vegetation
    (paved city), no moving traffic, no poles, no pedestrians, or no sidewalk on one side.
    """
    look = _sample_look(rng)
    straight = rng.random() < 0.3
    road = Road(
        lane_width=rng.uniform(2.9, 3.7),
        lanes_each_way=1 if rng.random() < 0.6 else 2,
        curvature=0.0 if straight else rng.uniform(-1 / 1000, 1 / 1000),
        curvature_wave=0.0 if straight else rng.uniform(0, 1 / 700),
        wavelength=rng.uniform(150, 400),
        phase=rng.uniform(0, 2 * np.pi),
        centre_line=str(rng.choice(["dashed", "solid", "double"], p=[0.6, 0.2, 0.2])),
        edge_lines=bool(rng.random() < 0.6),
        marking_wear=rng.uniform(0.0, 0.5),
    )
    has_buildings = rng.random() < 0.75
    has_vegetation = not has_buildings or rng.random() < 0.85

    def side() -> Side:
        wants_walk = not has_vegetation or rng.random() < (0.85 if has_buildings else 0.35)
        sidewalk = rng.uniform(1.5, 4.0) if wants_walk else 0.0
        if not has_vegetation:
            verge = 0.0
        elif sidewalk == 0:
            verge = rng.uniform(1.0, 4.0)
        else:
            verge = rng.uniform(0.5, 3.0) if rng.random() < 0.5 else 0.0
        paved = not has_vegetation or (sidewalk > 0 and has_buildings and rng.random() < 0.6)
        return Side(sidewalk=sidewalk, verge=verge, paved_beyond=bool(paved))

    left, right = side(), side()
    ego = Ego(
        speed=rng.uniform(6, 14),
        height=rng.uniform(1.35, 1.65),
        lateral=rng.uniform(-0.3, 0.3),
        pitch=math.radians(rng.uniform(-4, -1)),
        wobble=math.radians(rng.uniform(0, 1.0)),
        wobble_freq=rng.uniform(0.1, 0.4),
        wobble_phase=rng.uniform(0, 2 * np.pi),
    )
    s_end = ego.speed * duration
    s_range = (-40.0, s_end + 220.0)
    build_sides = [has_buildings and rng.random() < 0.85 for _ in range(2)]
    if has_buildings and not any(build_sides):
        build_sides[1] = True
    poles = rng.random() < 0.75
    people = rng.random() < 0.5
    props: list[Prop] = []
    for sign, sd, buildings in ((-1.0, left, build_sides[0]), (1.0, right, build_sides[1])):
        props += _side_props(
            rng,
            look,
            road,
            sd,
            sign,
            buildings=buildings,
            trees=has_vegetation and rng.random() < 0.7,
            hedges=has_vegetation and not sd.paved_beyond and rng.random() < 0.4,
            poles=poles,
            people=people,
            s_range=s_range,
        )
    props += _traffic(rng, road, ego, duration=duration, s_end=s_end)
    props += _backdrop(rng, look, buildings=has_buildings, trees=has_vegetation, s_from=s_end + 230)
    return Scene(
        road=road,
        left=left,
        right=right,
        ego=ego,
        look=look,
        props=tuple(props),
        texture_seed=int(rng.integers(2**31)),
        noise_seed=int(rng.integers(2**31)),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Textures


def _noise(rng: np.random.Generator, beta: float, elongate: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """(_TEX, _TEX) float32 tileable noise with amplitude spectrum 1/f^beta, zero mean and unit std.

    elongate (ex, ey) scales the frequencies along x / y: above 1 stretches features along that axis, below 1
    squeezes them (bark streaks, grass blades).
    """
    white = rng.standard_normal((_TEX, _TEX))
    fy = np.fft.fftfreq(_TEX)[:, None] * elongate[1]
    fx = np.fft.rfftfreq(_TEX)[None, :] * elongate[0]
    freq = np.hypot(fx, fy)
    freq[0, 0] = np.inf  # drop the mean
    field = np.fft.irfft2(np.fft.rfft2(white) / freq**beta, s=(_TEX, _TEX))
    return ((field - field.mean()) / field.std()).astype(np.float32)


def _colour(lum: np.ndarray, colour: RGB) -> np.ndarray:
    """(T, T) brightness times an RGB colour -> (T, T, 3)."""
    return lum[..., None] * np.asarray(colour, np.float32)


def _texel_grid() -> tuple[np.ndarray, np.ndarray]:
    """Texel centre coordinates in [0, 1): (u along columns, v along rows), each (T, T)."""
    c = (np.arange(_TEX, dtype=np.float32) + 0.5) / _TEX
    return np.meshgrid(c, c)


def _facade_texture(rng: np.random.Generator, facade: Facade) -> tuple[np.ndarray, np.ndarray]:
    """A 4 x 4 grid of bays x floors. Walls take the building's tint; glass keeps its colour (paint mask 0)."""
    u, v = _texel_grid()
    cu, cv = (u * 4) % 1.0, (v * 4) % 1.0
    wall = _colour(1 + 0.06 * _noise(rng, 1.2), facade.wall)
    ledge = np.abs(cv - 0.97) < 0.03
    wall[ledge] *= 0.75
    if facade.ribbon:
        window = (np.abs(cv - 0.5) < facade.window_h / 2) & (np.abs(cu - 0.5) < 0.48)
    else:
        window = (np.abs(cv - 0.45) < facade.window_h / 2) & (np.abs(cu - 0.5) < facade.window_w / 2)
    frame = ~window & (np.abs(cv - 0.45) < facade.window_h / 2 + 0.04) & (np.abs(cu - 0.5) < facade.window_w / 2 + 0.04)
    if not facade.ribbon:
        wall[frame] = np.minimum(wall[frame] * 1.25 + 0.05, 1.0)
    pane = rng.uniform(0.6, 1.4, (4, 4)).astype(np.float32)  # curtains, lights, reflections per window
    pane_lum = np.kron(pane, np.ones((_TEX // 4, _TEX // 4), np.float32))
    glass = _colour(pane_lum * (1.25 - 0.5 * cv) * (1 + 0.05 * _noise(rng, 1.0)), facade.glass)
    rgb = np.where(window[..., None], glass, wall)
    paint = np.where(window, 0.0, 1.0).astype(np.float32)
    return rgb, paint


def _car_texture(rng: np.random.Generator, material: Material) -> tuple[np.ndarray, np.ndarray]:
    """Neutral car paint (tinted per car) with untinted wheels, lights, plate, grille and glass.

    Sides are laid out for a nominal 4.5 m x 0.8 m body panel, front and rear for 1.8 m x 0.8 m, glass for a cabin.
    """
    u, v = _texel_grid()
    lum = 0.85 + 0.03 * _noise(rng, 1.5)
    rgb = _colour(lum, (1.0, 1.0, 1.0))
    paint = np.ones((_TEX, _TEX), np.float32)

    def fixed(mask: np.ndarray, colour: RGB) -> None:
        rgb[mask] = np.asarray(colour, np.float32)
        paint[mask] = 0.0

    if material == Material.CAR_SIDE:
        rgb[np.abs(u - 0.5) < 0.004] *= 0.5  # door gap
        fixed(v > 0.88, (0.08, 0.08, 0.08))  # sill
        for centre in (0.18, 0.8):
            r2 = ((u - centre) * 4.5 / 0.34) ** 2 + ((v - 0.79) * 0.8 / 0.34) ** 2
            fixed(r2 < 1.15, (0.12, 0.12, 0.12))  # arch
            fixed(r2 < 1.0, (0.05, 0.05, 0.05))  # tyre
            fixed(r2 < 0.3, (0.55, 0.55, 0.58))  # rim
    elif material in (Material.CAR_REAR, Material.CAR_FRONT):
        fixed(v > 0.82, (0.08, 0.08, 0.09))  # bumper
        fixed((np.abs(u - 0.5) < 0.12) & (np.abs(v - 0.62) < 0.08), (0.85, 0.85, 0.8))  # plate
        lights = (np.abs(v - 0.28) < 0.12) & ((u < 0.2) | (u > 0.8))
        if material == Material.CAR_REAR:
            fixed(lights & ((u > 0.03) & (u < 0.97)), (0.7, 0.06, 0.05))
        else:
            fixed(lights & ((u > 0.03) & (u < 0.97)), (0.92, 0.92, 0.85))
            fixed((np.abs(u - 0.5) < 0.22) & (np.abs(v - 0.35) < 0.12), (0.07, 0.07, 0.08))  # grille
    elif material == Material.GLASS:
        window = (u > 0.08) & (u < 0.92) & (v > 0.12) & (v < 0.97)
        glass = _colour((0.18 + 0.25 * (1 - v)) * (1 + 0.05 * _noise(rng, 1.0)), (0.75, 0.85, 1.0))
        rgb[window] = glass[window]
        paint[window] = 0.0
    return np.clip(rgb, 0, 1), paint


def _make_atlas(look: Look, rng: np.random.Generator) -> np.ndarray:
    """Every material of the clip, pre-blurred: (len(Material) * _LEVELS * _TEX * _TEX, 4) uint8.

    Channels are RGB and the paint mask (255 where a face's tint applies). Row of material m, level l, texel (v, u):
    ((m * _LEVELS + l) * _TEX + v) * _TEX + u.
    """
    u, v = _texel_grid()
    ones = np.ones((_TEX, _TEX), np.float32)
    textures: dict[Material, tuple[np.ndarray, np.ndarray]] = {}

    specks = (rng.random((_TEX, _TEX)) > 0.985).astype(np.float32)
    asphalt = 1 + 0.12 * _noise(rng, 0.3) + 0.1 * _noise(rng, 1.6) + 0.3 * specks
    textures[Material.ASPHALT] = (_colour(asphalt, look.asphalt), ones)

    joints = ((u * 2) % 1.0 < 0.012) | (v < 0.01)
    curb = (1 + 0.07 * _noise(rng, 0.8)) * np.where(joints, 0.6, 1.0)
    textures[Material.CURB] = (_colour(curb, look.curb), ones)

    tiles = 4  # pavers per tile side
    row = np.floor(v * tiles)
    shift = np.where(row % 2 == 1, 0.5, 0.0) if look.brick_bond else 0.0
    col = np.floor((u * tiles + shift) % tiles)
    per_paver = rng.normal(1.0, 0.07, (tiles, tiles)).astype(np.float32)
    joint = ((u * tiles + shift) % 1.0 < 0.05) | ((v * tiles) % 1.0 < 0.05)
    pavers = per_paver[row.astype(int), col.astype(int)] * (1 + 0.06 * _noise(rng, 0.5)) * np.where(joint, 0.65, 1.0)
    textures[Material.PAVERS] = (_colour(pavers, look.pavers), ones)

    patches = np.clip(0.5 + 0.5 * _noise(rng, 1.8), 0, 1)[..., None]
    blades = 0.8 + 0.2 * _noise(rng, 0.6, (1.0, 0.25))
    grass = ((1 - patches) * np.asarray(look.grass) + patches * np.asarray(look.grass_dry)) * blades[..., None]
    textures[Material.GRASS] = (grass.astype(np.float32), ones)

    leaves, clumps = _noise(rng, 0.9), _noise(rng, 1.7)
    mix = np.clip(0.5 + 0.4 * clumps, 0, 1)[..., None]
    lum = np.clip(0.75 + 0.25 * leaves + 0.2 * clumps, 0.25, 1.4)
    foliage = ((1 - mix) * np.asarray(look.foliage[0]) + mix * np.asarray(look.foliage[1])) * lum[..., None]
    foliage[leaves < -1.3] *= 0.35  # gaps between leaves
    textures[Material.FOLIAGE] = (foliage.astype(np.float32), ones)

    textures[Material.BARK] = (_colour(0.8 + 0.25 * _noise(rng, 0.8, (0.15, 1.0)), look.bark), ones)
    for material, facade in zip(FACADES, look.facades, strict=True):
        textures[material] = _facade_texture(rng, facade)
    for material in (Material.CAR_SIDE, Material.CAR_REAR, Material.CAR_FRONT, Material.GLASS, Material.PAINT):
        textures[material] = _car_texture(rng, material)
    textures[Material.METAL] = (_colour(0.8 + 0.06 * _noise(rng, 0.8, (0.2, 1.0)), (1.0, 1.0, 1.0)), ones)
    textures[Material.CLOTH] = (_colour(0.85 + 0.12 * _noise(rng, 1.0), (1.0, 1.0, 1.0)), ones)
    textures[Material.SKIN] = (_colour(0.9 + 0.04 * _noise(rng, 1.5), (1.0, 1.0, 1.0)), ones)

    levels = []
    for material in Material:
        rgb, paint = textures[material]
        base = np.concatenate([np.clip(rgb, 0, 1), paint[..., None]], axis=2).astype(np.float32)
        for level in range(_LEVELS):
            if level == 0:
                levels.append(base)
                continue
            # Two box filters of width w have variance (w^2 - 1) / 6: a cheap Gaussian of sigma 2^(level - 1).
            width = 2 * round(math.sqrt(6 * 4.0 ** (level - 1) + 1) / 2) + 1
            pad = width
            padded = np.pad(base, ((pad, pad), (pad, pad), (0, 0)), mode="wrap")  # keep the tile seamless
            levels.append(cv2.blur(cv2.blur(padded, (width, width)), (width, width))[pad:-pad, pad:-pad])
    atlas = np.round(np.stack(levels) * 255).astype(np.uint8)
    return atlas.reshape(-1, 4)


# ---------------------------------------------------------------------------------------------------------------------
# Rendering


class _FaceTable:
    """All faces of a scene's props as flat arrays, posed per frame with vectorised numpy."""

    def __init__(self, props: tuple[Prop, ...]) -> None:
        faces = [(i, f) for i, p in enumerate(props) for f in p.faces]
        self.count = len(faces)
        sizes = np.array([len(f.polygon) for _, f in faces], np.int64)
        self.start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.size = sizes
        self.verts = np.concatenate([f.polygon for _, f in faces]) if faces else np.zeros((0, 3))
        self.vert_face = np.repeat(np.arange(self.count), sizes)
        self.prop = np.array([i for i, _ in faces], np.int64)
        self.origin = np.array([f.origin for _, f in faces]).reshape(-1, 3)
        self.u_axis = np.array([f.u_axis for _, f in faces]).reshape(-1, 3)
        self.v_axis = np.array([f.v_axis for _, f in faces]).reshape(-1, 3)
        self.class_id = np.array([f.class_id for _, f in faces], np.uint8)
        self.material = np.array([int(f.material) for _, f in faces], np.int64)
        self.tint = np.array([f.tint for _, f in faces], np.float32).reshape(-1, 3)
        scale = np.array([f.scale for _, f in faces], np.float32).reshape(-1, 2)
        offset = np.array([f.offset for _, f in faces], np.float32).reshape(-1, 2)
        self.static = np.concatenate([scale.T, offset.T, scale.max(axis=1, keepdims=True).T])  # (5, F)
        self.two_sided = np.array([f.two_sided for _, f in faces], bool)
        self.swing = np.array([f.swing for _, f in faces], np.float64)
        self.swing_phase = np.array([f.swing_phase for _, f in faces], np.float64)
        self.pivot = np.array([f.pivot for _, f in faces], np.float64).reshape(-1, 2)
        self.prop_s = np.array([p.s for p in props], np.float64)
        self.prop_d = np.array([p.d for p in props], np.float64)
        self.prop_speed = np.array([p.speed for p in props], np.float64)
        self.prop_sign = np.array([-1.0 if p.reverse else 1.0 for p in props])
        self.prop_half = np.array([p.half_length for p in props], np.float64)
        self.prop_gait = np.array([p.gait for p in props], np.float64)
        self.prop_shadow = np.array([p.shadow for p in props], np.float64).reshape(-1, 2)


class SceneRenderer:
    """Renders frames of one scene at one image size. Textures are built once, here.

    Args:
        scene: what to render.
        size: (width, height) of the images in pixels, each at least 16.

    Raises:
        ValueError: if the size is too small.
    """

    def __init__(self, scene: Scene, *, size: tuple[int, int]) -> None:
        width, height = size
        if width < 16 or height < 16:
            raise ValueError(f"image size {width}x{height} is too small; use at least 16x16 pixels")
        self.scene = scene
        self.width, self.height = width, height
        self.focal = width / (2 * math.tan(math.radians(HFOV_DEG) / 2))
        self.cx, self.cy = (width - 1) / 2, (height - 1) / 2
        xs = (np.arange(width, dtype=np.float32) - self.cx) / self.focal
        ys = (np.arange(height, dtype=np.float32) - self.cy) / self.focal
        gx, gy = np.meshgrid(xs, ys)
        self._pix = np.stack([gx.ravel(), gy.ravel(), np.ones(gx.size, np.float32)])  # (3, N) camera rays, z = 1

        road = scene.road
        z = np.arange(-400.0, 8000.0, 2.0)
        window = np.clip((900.0 - z) / 300.0, 0.0, 1.0)  # curves fade out beyond 600 m: the far road is straight
        kappa = (road.curvature + road.curvature_wave * np.sin(2 * np.pi * z / road.wavelength + road.phase)) * window
        slope = _integrate(kappa, 2.0)
        slope -= np.interp(0.0, z, slope)  # the road starts along z, at x = 0
        offset = _integrate(slope, 2.0)
        offset -= np.interp(0.0, z, offset)
        heading = np.arctan(slope)
        self._z, self._c, self._cos, self._sin = z, offset, np.cos(heading), np.sin(heading)

        look = scene.look
        texture_rng = np.random.default_rng(scene.texture_seed)
        self._atlas = _make_atlas(look, texture_rng)
        self._clouds = np.clip(0.5 + 0.35 * _noise(texture_rng, 1.3), 0, 1)
        self._faces = _FaceTable(scene.props)
        if self._faces.count > np.iinfo(np.uint16).max - 2:
            raise ValueError(f"scene has {self._faces.count} faces, the face buffer holds 65533; render shorter clips")
        radius = np.hypot(gx, gy).ravel() * self.focal / width  # 0.5 at the left and right borders
        vignette = 1.0 - 0.35 * radius**2
        self._gain = (np.outer(look.cast, vignette) * look.exposure).astype(np.float32)  # (3, N)
        self._horizon, self._zenith = _column(look.sky_horizon), _column(look.sky_zenith)
        self._cloud, self._marking, self._centre_marking = (
            _column(look.cloud),
            _column(look.marking),
            _column(look.centre_marking),
        )
        self._asphalt_sum = np.float32(sum(look.asphalt))

        half = road.half_width
        self._edges = np.array([scene.left.edges(half), scene.right.edges(half)], np.float32).T  # (band, side)
        self._paved_beyond = np.array([scene.left.paved_beyond, scene.right.paved_beyond])
        self._ground_scale = np.zeros(len(Material), np.float32)  # texels per metre of the ground materials
        for material in (Material.ASPHALT, Material.CURB, Material.GRASS):
            self._ground_scale[material] = _per_m(material)[0]
        self._ground_scale[Material.PAVERS] = _TEX / (4 * look.paver_size)

    # -- geometry ------------------------------------------------------------------------------------------------------

    def _road_at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre line x, cos and sin of its heading at distances s (m) along the road."""
        return np.interp(s, self._z, self._c), np.interp(s, self._z, self._cos), np.interp(s, self._z, self._sin)

    def camera(self, t: float, *, yaw: float = 0.0, pitch: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Camera at time t (s): rotation R (3, 3) world -> OpenCV camera, and centre C (3,) in world metres.

        yaw and pitch (rad, + right / + up) turn the camera away from the driving direction (iconic views).
        """
        ego = self.scene.ego
        s = ego.speed * t
        c, cos, sin = (float(a) for a in self._road_at(np.array(s)))
        centre = np.array([c + self.scene.camera_d * cos, ego.height, s - self.scene.camera_d * sin])
        theta = math.atan2(sin, cos) + ego.wobble * math.sin(2 * np.pi * ego.wobble_freq * t + ego.wobble_phase) + yaw
        phi = ego.pitch + pitch
        yaw_m = np.array([[math.cos(theta), 0, -math.sin(theta)], [0, 1, 0], [math.sin(theta), 0, math.cos(theta)]])
        pitch_m = np.array([[1, 0, 0], [0, math.cos(phi), -math.sin(phi)], [0, math.sin(phi), math.cos(phi)]])
        return np.diag([1.0, -1.0, 1.0]) @ pitch_m @ yaw_m, centre

    def _pose(self, t: float) -> tuple[np.ndarray, ...]:
        """World coordinates at time t: vertices (V, 3), face origins, u and v axes (F, 3), prop road positions."""
        ft = self._faces
        s = ft.prop_s + ft.prop_speed * t
        c, cos, sin = self._road_at(s)
        # Right (N) and forward (T) unit vectors of each prop; reversed props face the other way.
        nx, nz = cos * ft.prop_sign, -sin * ft.prop_sign
        tx, tz = sin * ft.prop_sign, cos * ft.prop_sign
        px, pz = c + ft.prop_d * cos, s - ft.prop_d * sin

        angle = ft.swing * np.sin(2 * np.pi * ft.prop_gait[ft.prop] * t + ft.swing_phase)
        ca, sa = np.cos(angle), np.sin(angle)

        def swing(points: np.ndarray, face: np.ndarray, about_pivot: bool) -> np.ndarray:
            y, z = points[:, 1], points[:, 2]
            py, pz_ = (ft.pivot[face, 0], ft.pivot[face, 1]) if about_pivot else (0.0, 0.0)
            out = points.copy()
            out[:, 1] = py + (y - py) * ca[face] - (z - pz_) * sa[face]
            out[:, 2] = pz_ + (y - py) * sa[face] + (z - pz_) * ca[face]
            return out

        def to_world(points: np.ndarray, prop: np.ndarray, translate: bool) -> np.ndarray:
            x, y, z = points[:, 0], points[:, 1], points[:, 2]
            out = np.empty_like(points)
            out[:, 0] = x * nx[prop] + z * tx[prop] + (px[prop] if translate else 0.0)
            out[:, 1] = y
            out[:, 2] = x * nz[prop] + z * tz[prop] + (pz[prop] if translate else 0.0)
            return out

        faces = np.arange(ft.count)
        verts = to_world(swing(ft.verts, ft.vert_face, True), ft.prop[ft.vert_face], True)
        origin = to_world(swing(ft.origin, faces, True), ft.prop, True)
        u_axis = to_world(swing(ft.u_axis, faces, False), ft.prop, False)
        v_axis = to_world(swing(ft.v_axis, faces, False), ft.prop, False)
        return verts, origin, u_axis, v_axis, s

    # -- rendering -----------------------------------------------------------------------------------------------------

    def _project(self, points: np.ndarray) -> np.ndarray:
        """(k, 3) camera-frame points with z > 0 -> (k, 2) int32 pixel coordinates in 1/16 px (cv2 shift=4)."""
        xy = points[:, :2] / points[:, 2:3] * self.focal + (self.cx, self.cy)
        return np.round(np.clip(xy, -1e6, 1e6) * 16).astype(np.int32)

    def _clip_near(self, polygon: np.ndarray) -> np.ndarray:
        """Sutherland-Hodgman clip of a (k, 3) camera-frame polygon to z >= _NEAR."""
        out = []
        for i in range(len(polygon)):
            a, b = polygon[i - 1], polygon[i]
            a_in, b_in = a[2] >= _NEAR, b[2] >= _NEAR
            if a_in != b_in:
                out.append(a + (b - a) * (_NEAR - a[2]) / (b[2] - a[2]))
            if b_in:
                out.append(b)
        return np.array(out).reshape(-1, 3)

    def _rasterise(
        self,
        rot: np.ndarray,
        centre: np.ndarray,
        verts: np.ndarray,
        origin: np.ndarray,
        normal: np.ndarray,
        s: np.ndarray,
    ) -> np.ndarray:
        """Face-index buffer (H, W) uint16: 0 sky, 1 ground, 2 + i face i (drawn far to near)."""
        ft = self._faces
        fid = np.zeros((self.height, self.width), np.uint16)
        if ft.count == 0:
            return fid
        cam = (verts - centre) @ rot.T
        z = cam[:, 2]
        zmax = np.maximum.reduceat(z, ft.start)
        zmin = np.minimum.reduceat(z, ft.start)
        safe_z = np.maximum(z, _NEAR)
        px = cam[:, 0] / safe_z * self.focal + self.cx
        py = cam[:, 1] / safe_z * self.focal + self.cy
        off_screen = (
            (np.maximum.reduceat(px, ft.start) < -1)
            | (np.minimum.reduceat(px, ft.start) > self.width)
            | (np.maximum.reduceat(py, ft.start) < -1)
            | (np.minimum.reduceat(py, ft.start) > self.height)
        ) & (zmin >= _NEAR)
        facing = ft.two_sided | (np.einsum("ij,ij->i", centre - origin, normal) > 0)
        visible = facing & (zmax > _NEAR) & ~off_screen

        # Painter's key: distance to the part of the prop (along the road) that lies ahead of the camera.
        ego_s = float(centre[2])
        lo = np.maximum(s - ft.prop_half, ego_s + 2.0)
        hi = np.maximum(s + ft.prop_half, ego_s + 2.0)
        key = np.hypot((lo + hi) / 2 - ego_s, ft.prop_d - self.scene.camera_d)
        faces = np.flatnonzero(visible)
        faces = faces[np.lexsort((faces, -key[ft.prop[faces]]))]
        points = self._project(np.where(z[:, None] > _NEAR, cam, _NEAR))
        for i in faces:
            a, b = ft.start[i], ft.start[i] + ft.size[i]
            if zmin[i] < _NEAR:
                polygon = self._clip_near(cam[a:b])
                if len(polygon) < 3:
                    continue
                pts = self._project(polygon)
            else:
                pts = points[a:b]
            cv2.fillPoly(fid, [pts], int(i) + 2, lineType=cv2.LINE_8, shift=4)
        return fid

    def _shadows(self, rot: np.ndarray, centre: np.ndarray, s: np.ndarray) -> np.ndarray:
        """(H, W) float32 in [0, 1]: soft contact shadows under cars and people."""
        ft = self._faces
        buf = np.zeros((self.height, self.width), np.uint8)
        ego_s = float(centre[2])
        for p in np.flatnonzero((ft.prop_shadow[:, 0] > 0) & (s > ego_s - 10) & (s < ego_s + 120)):
            hw, hl = ft.prop_shadow[p]
            c, cos, sin = (float(a[0]) for a in self._road_at(s[p : p + 1]))
            px, pz = c + ft.prop_d[p] * cos, s[p] - ft.prop_d[p] * sin
            corners = [
                (px + x * cos + z * sin, 0.0, pz - x * sin + z * cos)
                for x, z in ((-hw, -hl), (hw, -hl), (hw, hl), (-hw, hl))
            ]
            cam = (np.array(corners) - centre) @ rot.T
            polygon = self._clip_near(cam) if cam[:, 2].min() < _NEAR else cam
            if len(polygon) >= 3:
                cv2.fillPoly(buf, [self._project(polygon)], 255, lineType=cv2.LINE_AA, shift=4)
        sigma = max(self.width / 400.0, 0.8)
        return cv2.GaussianBlur(buf, (0, 0), sigma).astype(np.float32) / 255.0

    def _sample(self, material: np.ndarray, tu: np.ndarray, tv: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Atlas texels (4, K) float32 in [0, 1] (R, G, B, paint mask) at texture coordinates tu, tv (texels, (K,)).

        `footprint` (texels per pixel) picks the pre-blurred level, so that far texture is averaged, not aliased;
        magnified texture (footprint < 0.5, close to the camera) is filtered bilinearly instead of showing blocks.
        """
        mask = _TEX - 1
        level = np.clip(np.floor(np.log2(np.maximum(footprint, 1e-3)) + 0.5), 0, _LEVELS - 1).astype(np.int64)
        base = (material * _LEVELS + level) * _TEX
        iu = np.floor(tu).astype(np.int64) & mask
        iv = np.floor(tv).astype(np.int64) & mask
        out = self._atlas[(base + iv) * _TEX + iu].astype(np.float32)
        near = np.flatnonzero(footprint < 0.5)
        if near.size:
            x, y = tu[near] - 0.5, tv[near] - 0.5  # texel centres sit at half-integers
            x0, y0 = np.floor(x), np.floor(y)
            wx, wy = (x - x0)[:, None], (y - y0)[:, None]
            u0, v0 = x0.astype(np.int64) & mask, y0.astype(np.int64) & mask
            u1, v1 = (u0 + 1) & mask, (v0 + 1) & mask
            b = base[near]

            def at(v: np.ndarray, u: np.ndarray) -> np.ndarray:
                return self._atlas[(b + v) * _TEX + u].astype(np.float32)

            top = at(v0, u0) * (1 - wx) + at(v0, u1) * wx
            bottom = at(v1, u0) * (1 - wx) + at(v1, u1) * wx
            out[near] = top * (1 - wy) + bottom * wy
        return np.ascontiguousarray(out.T) * np.float32(1 / 255)

    def render(self, frame: int, *, yaw: float = 0.0, pitch: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Frame `frame` (at t = frame / FPS): RGB (H, W, 3) uint8 and DRIVE labels (H, W) uint8.

        yaw and pitch (rad) turn the camera away from the driving direction; the clips use 0.
        """
        look = self.scene.look
        t = frame / FPS
        rot, centre = self.camera(t, yaw=yaw, pitch=pitch)
        rays = rot.T.astype(np.float32) @ self._pix  # (3, N) world directions with camera z = 1
        verts, origin, u_axis, v_axis, s = self._pose(t)
        normal = np.cross(u_axis, v_axis)

        fid = self._rasterise(rot, centre, verts, origin, normal, s).ravel()
        fid[(fid == 0) & (rays[1] < 0)] = 1
        labels = np.full(fid.size, SKY, np.uint8)
        rgb = np.empty((3, fid.size), np.float32)
        obj = np.flatnonzero(fid >= 2)
        if obj.size:
            faces = fid[obj].astype(np.int64) - 2
            labels[obj], rgb[:, obj] = self._shade_props(faces, rays[:, obj], centre, origin, u_axis, v_axis, normal)
        ground = np.flatnonzero(fid == 1)
        if ground.size:
            shadow = self._shadows(rot, centre, s).ravel()[ground]
            labels[ground], rgb[:, ground] = self._shade_ground(rays[:, ground], centre, shadow)
        sky = np.flatnonzero(fid == 0)
        if sky.size:
            rgb[:, sky] = self._sky(rays[:, sky], centre)

        rgb *= self._gain
        image = cv2.merge(list(rgb.reshape(3, self.height, self.width)))
        image = cv2.GaussianBlur(image, (0, 0), look.blur)
        image += self._sensor_noise(frame, image)
        image *= 255
        np.clip(image, 0, 255, out=image)
        return (image + 0.5).astype(np.uint8), labels.reshape(self.height, self.width)

    def _sensor_noise(self, frame: int, image: np.ndarray) -> np.ndarray:
        """Noise (H, W, 3) for a frame, std look.noise at mid grey and growing with brightness like shot noise.

        The sum of two uniform bytes (triangular, std 256 / sqrt(6)) stands in for a Gaussian at a quarter the cost.
        """
        rng = np.random.default_rng([self.scene.noise_seed, frame])
        pair = np.frombuffer(rng.bytes(2 * image.size), np.uint8).reshape(2, *image.shape)
        noise = pair[0].astype(np.float32) + pair[1] - np.float32(255)
        noise *= np.float32(self.scene.look.noise * math.sqrt(6) / 256 / math.sqrt(0.7))
        noise *= np.sqrt(np.maximum(image, 0) + np.float32(0.2))
        return noise

    def _haze(self, colour: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Blend (3, K) colours towards the horizon colour with distance (Koschmieder's law), in place."""
        keep = np.exp(-depth / np.float32(self.scene.look.haze))
        colour *= keep
        colour += self._horizon * (1 - keep)
        return colour

    def _shade_props(
        self,
        faces: np.ndarray,
        rays: np.ndarray,
        centre: np.ndarray,
        origin: np.ndarray,
        u_axis: np.ndarray,
        v_axis: np.ndarray,
        normal: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels (K,) and colours (3, K) of pixels whose rays (3, K) hit `faces` (K,): ray-plane intersection."""
        ft, look = self._faces, self.scene.look
        rel = centre - origin  # (F, 3) camera relative to each face's origin
        lambert = normal @ np.asarray(look.sun)
        # Vertical faces see half the sky; two-sided foliage takes light from either side.
        lambert = np.where(ft.two_sided, 0.6 * np.abs(lambert) + 0.2, np.maximum(lambert, 0.0))
        shade = look.ambient * (0.75 + 0.25 * normal[:, 1]) + look.sun_strength * lambert
        per_face = np.concatenate(
            [
                normal.T,
                u_axis.T,
                v_axis.T,
                [-np.einsum("ij,ij->i", rel, normal), np.einsum("ij,ij->i", rel, u_axis)],
                [np.einsum("ij,ij->i", rel, v_axis), shade],
                (ft.tint * shade[:, None]).T,
            ]
        ).astype(np.float32)
        g = np.take(per_face, faces, axis=1)  # (16, K)
        st = np.take(ft.static, faces, axis=1)  # (5, K): texels per metre u, v; offsets u, v; max texels per metre
        r0, r1, r2 = rays
        rn = r0 * g[0] + r1 * g[1] + r2 * g[2]
        rn = np.where(np.abs(rn) < 1e-6, np.float32(1e-6), rn)  # rays grazing a face's plane at its very edge
        t_hit = np.clip(g[9] / rn, _NEAR, _FAR)
        u = g[10] + t_hit * (r0 * g[3] + r1 * g[4] + r2 * g[5])
        v = g[11] + t_hit * (r0 * g[6] + r1 * g[7] + r2 * g[8])
        ray_len = np.sqrt(r0 * r0 + r1 * r1 + r2 * r2)
        cos_view = np.maximum(np.abs(rn) / ray_len, 0.05)
        metres_per_px = t_hit * ray_len / np.float32(self.focal) / np.sqrt(cos_view)
        tex = self._sample(ft.material[faces], u * st[0] + st[2], v * st[1] + st[3], metres_per_px * st[4])
        paint = tex[3]
        colour = tex[:3] * (paint * (g[13:16] - g[12]) + g[12])
        return ft.class_id[faces], self._haze(colour, t_hit)

    def _shade_ground(self, rays: np.ndarray, centre: np.ndarray, shadow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels (K,) and colours (3, K) of ground pixels (rays (3, K)): lateral road bands, markings, shadows."""
        look, road = self.scene.look, self.scene.road
        r0, r1, r2 = rays
        t_hit = np.minimum(np.float32(centre[1]) / -r1, _FAR)
        z = centre[2] + t_hit * r2
        c, cos, _ = self._road_at(z)
        d = ((centre[0] + t_hit * r0 - c) * cos).astype(np.float32)
        s = z.astype(np.float32)
        a = np.abs(d)
        right = (d >= 0).astype(np.int64)
        curb_end, verge_end, walk_end = self._edges[:, right]
        bands = [a < road.half_width, a < curb_end, a < verge_end, a < walk_end, self._paved_beyond[right]]
        cls = np.select(bands, [ROAD, SIDEWALK, VEGETATION, SIDEWALK, SIDEWALK], VEGETATION).astype(np.uint8)
        material = np.select(
            bands,
            [Material.ASPHALT, Material.CURB, Material.GRASS, Material.PAVERS, Material.PAVERS],
            Material.GRASS,
        ).astype(np.int64)
        per_m = self._ground_scale[material]
        # Metres covered by one pixel across the road and along it (stretched at grazing angles).
        ray_len = np.sqrt(r0 * r0 + r1 * r1 + r2 * r2)
        across = t_hit * ray_len / np.float32(self.focal)
        grazing = np.maximum(-r1 / ray_len, 1e-3)
        along = across / grazing
        tex = self._sample(material, a * per_m, s * per_m, across / np.sqrt(grazing) * per_m)
        colour = tex[:3]

        on_road = bands[0]
        fresh = 1 - road.marking_wear
        lines = self._markings(d, s, across, along) * on_road * fresh
        centre_line = self._centre_line(d, s, across, along) * on_road * fresh
        # Paint keeps some of the asphalt's grain.
        grain = np.clip(0.85 + 0.15 * (colour[0] + colour[1] + colour[2]) / self._asphalt_sum, 0.7, 1.1)
        for paint, paint_colour in ((lines, self._marking), (centre_line, self._centre_marking)):
            colour += paint * (paint_colour * grain - colour)
        # Worn tyre tracks darken the middle of each wheel path.
        lane_pos = np.abs(np.mod(d, road.lane_width) - road.lane_width / 2)
        colour *= 1 - 0.08 * np.exp(-(((lane_pos - 0.85) / 0.3) ** 2)) * on_road

        light = look.ambient + look.sun_strength * max(look.sun[1], 0.0)
        colour *= light * (1 - shadow * (0.45 + 0.3 * look.sun_strength))
        return cls, self._haze(colour, t_hit)

    def _markings(self, d: np.ndarray, s: np.ndarray, across: np.ndarray, along: np.ndarray) -> np.ndarray:
        """Coverage in [0, 1] of edge lines and lane dividers, box-filtered over each pixel's ground footprint."""
        road = self.scene.road
        cover = np.zeros_like(d)
        if road.edge_lines:
            for centre in (-road.half_width + 0.3, road.half_width - 0.3):
                cover = np.maximum(cover, _line(d, centre, 0.15, across))
        if road.lanes_each_way == 2:
            dash = _dashes(s, 3.0, 9.0, along)
            for centre in (-road.lane_width, road.lane_width):
                cover = np.maximum(cover, _line(d, centre, 0.12, across) * dash)
        return cover

    def _centre_line(self, d: np.ndarray, s: np.ndarray, across: np.ndarray, along: np.ndarray) -> np.ndarray:
        """Coverage in [0, 1] of the centre line: dashed, solid, or a double solid line."""
        style = self.scene.road.centre_line
        if style == "dashed":
            return _line(d, 0.0, 0.13, across) * _dashes(s, 3.0, 9.0, along)
        if style == "solid":
            return _line(d, 0.0, 0.13, across)
        return np.maximum(_line(d, -0.12, 0.1, across), _line(d, 0.12, 0.1, across))

    def _sky(self, rays: np.ndarray, centre: np.ndarray) -> np.ndarray:
        """(3, K) sky colours for rays (3, K): gradient by elevation, a cloud layer in perspective, the sun's glow."""
        look = self.scene.look
        r0, r1, r2 = rays
        ray_len = np.sqrt(r0 * r0 + r1 * r1 + r2 * r2)
        up = np.maximum(r1 / ray_len, 0.0)
        grad = np.clip(up / 0.5, 0, 1) ** 0.7
        colour = self._horizon + (self._zenith - self._horizon) * grad
        height = np.maximum(r1, 1e-3)
        cu = np.floor((centre[0] + r0 / height * _CLOUD_HEIGHT) / _CLOUD_TEXEL).astype(np.int64) & (_TEX - 1)
        cv = np.floor((centre[2] + r2 / height * _CLOUD_HEIGHT) / _CLOUD_TEXEL).astype(np.int64) & (_TEX - 1)
        density = self._clouds[cv, cu]
        cover = np.clip((density - (1 - look.cloud_cover)) * 4, 0, 1) * np.clip((up - 0.02) / 0.15, 0, 1)
        colour += cover * (self._cloud * (0.85 + 0.15 * density) - colour)
        sun = look.sun
        toward_sun = np.maximum((r0 * sun[0] + r1 * sun[1] + r2 * sun[2]) / ray_len, 0.0)
        colour += ((0.5 * toward_sun**64 + 0.12 * toward_sun**8) * look.sun_strength).astype(np.float32)
        return colour


def _column(colour: RGB) -> np.ndarray:
    """An RGB colour as a (3, 1) float32 column, to scale (3, K) planes."""
    return np.asarray(colour, np.float32).reshape(3, 1)


def _integrate(rate: np.ndarray, step: float) -> np.ndarray:
    """Cumulative trapezoid integral of samples `step` apart, starting at 0."""
    return np.concatenate([[0.0], np.cumsum((rate[1:] + rate[:-1]) / 2 * step)])


def _line(d: np.ndarray, centre: float, width: float, footprint: np.ndarray) -> np.ndarray:
    """Fraction of the interval [d - footprint/2, d + footprint/2] covered by a line of `width` at `centre` (m)."""
    lo = np.maximum(d - footprint / 2, centre - width / 2)
    hi = np.minimum(d + footprint / 2, centre + width / 2)
    return np.clip((hi - lo) / footprint, 0, 1)


def _dashes(s: np.ndarray, dash: float, period: float, footprint: np.ndarray) -> np.ndarray:
    """Fraction of [s - footprint/2, s + footprint/2] on dashes `dash` m long every `period` m (exact box filter)."""

    def painted_before(x: np.ndarray) -> np.ndarray:
        k = np.floor(x / period)
        return k * dash + np.minimum(x - k * period, dash)

    footprint = np.maximum(footprint, 1e-3)
    return (painted_before(s + footprint / 2) - painted_before(s - footprint / 2)) / footprint
