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

Modules: `scene` (the description), `props` (props as polygons), `sampling` (`sample_scene`), `textures`, `render`
(`SceneRenderer`), and `drives` (clips and iconic images written to disk: `wsvs-train synth`).
"""
