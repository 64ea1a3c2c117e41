"""`sample_scene`: one clip's scene drawn from a random generator (look, road, roadside props, traffic, backdrop)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from wsvs_training.synth.props import (
    _blob,
    _building,
    _hedge,
    _hsv,
    _jitter,
    _person,
    _sign_pole,
    _street_lamp,
    _tree,
    car_prop,
)
from wsvs_training.synth.scene import VEGETATION, Ego, Facade, Look, Material, Prop, Road, Scene, Side


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
