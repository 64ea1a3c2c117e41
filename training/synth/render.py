"""`SceneRenderer`: a scene's frames and label maps, rasterised far-to-near into a face-index buffer, each pixel's ray
intersected with its face's plane (or the ground) for depth and world-anchored texture coordinates.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from wsvs_training.synth.scene import (
    _CLOUD_HEIGHT,
    _CLOUD_TEXEL,
    _FAR,
    _LEVELS,
    _NEAR,
    _TEX,
    FPS,
    HFOV_DEG,
    RGB,
    ROAD,
    SIDEWALK,
    SKY,
    VEGETATION,
    Material,
    Prop,
    Scene,
    _per_m,
)
from wsvs_training.synth.textures import _make_atlas, _noise


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
