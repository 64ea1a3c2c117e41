"""Tileable per-clip textures: noise, facades and car paint, packed with their pre-blurred levels into one atlas."""

from __future__ import annotations

import math

import cv2
import numpy as np

from wsvs_training.synth.scene import _LEVELS, _TEX, FACADES, RGB, Facade, Look, Material


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
