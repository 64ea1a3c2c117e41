"""The description of a procedural driving scene: units, constants, materials and the frozen dataclasses
(`Look`, `Road`, `Side`, `Ego`, `Face`, `Prop`, `Scene`) that sampling fills and rendering reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

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
