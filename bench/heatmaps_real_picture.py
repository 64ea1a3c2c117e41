"""Udacity dashcam frames (MIT) and the B_k masks of the real-frame heatmap recipe (docs/results/heatmaps_real.md).

usage: python bench/heatmaps_real_picture.py HEADS.pt OUT.jpg MASK_FRACTION
(HEADS.pt: `wsvs-train classifiers --backbone efficientnet-lite0 ...`; ../shared/data/video holds the clips)
"""

import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from wsvs_ros.labels import DRIVE
from wsvs_ros.preprocess import frame_to_tensor
from wsvs_ros.spec import ModelSpec
from wsvs_training.heatmaps import heatmap_source
from wsvs_training.losses import binary_masks

torch.set_num_threads(1)
spec = ModelSpec(DRIVE.name, DRIVE.names, input_width=480, input_height=352)
source = heatmap_source(DRIVE, iconic_path=sys.argv[1], imagenet="efficientnet-lite0")
video = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "video") + "/"
picks = [
    ("udacity_lanelines_solidWhiteRight.mp4", 0),
    ("udacity_lanelines_solidWhiteRight.mp4", 150),
    ("udacity_vehicledetection_test_video.mp4", 30),
]
names = ["road", "sidewalk", "vegetation", "building", "sky", "car"]
W, H = 240, 176
rows = []
for name, index in picks:
    cap = cv2.VideoCapture(video + name)
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, bgr = cap.read()
    assert ok, (name, index)
    rgb_full = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rgb = cv2.resize(rgb_full, (W, H), interpolation=cv2.INTER_AREA)
    heat = source(frame_to_tensor(rgb_full, spec, torch.device("cpu")))
    masks = binary_masks(heat, float(sys.argv[3]))[0].numpy()
    tiles = [rgb]
    for n in names:
        c = DRIVE.by_name(n)
        m = cv2.resize(masks[c.id].astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).astype(bool)
        tile = (rgb * 0.35).astype(np.uint8)
        tile[m] = (0.5 * rgb[m] + 0.5 * np.array(c.color)).astype(np.uint8)
        cv2.putText(tile, n, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    rows.append(np.concatenate(tiles, axis=1))
img = np.concatenate(rows, axis=0)
cv2.imwrite(sys.argv[2], cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
print(f"wrote {sys.argv[2]}: {img.shape[1]}x{img.shape[0]}")
