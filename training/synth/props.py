"""The props of a scene as 3-D polygons (`Face`s): geometry helpers, then cars, people, buildings, trees, hedges,
street lamps and sign poles.
"""

from __future__ import annotations

import colorsys

import numpy as np

from wsvs_training.synth.scene import (
    _TEX,
    BUILDING,
    CAR,
    FACADES,
    PERSON,
    POLE,
    RGB,
    VEGETATION,
    Face,
    Look,
    Material,
    Prop,
    _per_m,
)


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
