"""Label sets as data: class ids, names, colours, and the ImageNet classes each class shares (paper 4.2).

Every set has `road`, `sidewalk` and `vegetation` under those names, whatever the dataset calls them (CamVid's
"Pavement" and "Tree" are aliases), so nodes and tools can ask for them by one name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class LabelClass:
    """One class: `id` is its index in the network's scores, `color` is RGB."""

    id: int
    name: str
    color: Colour
    imagenet_ids: tuple[int, ...] = ()
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSet:
    name: str
    classes: tuple[LabelClass, ...]
    _by_name: dict[str, LabelClass] = field(init=False, repr=False, compare=False)
    _palette: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if [c.id for c in self.classes] != list(range(len(self.classes))):
            raise ValueError(f"label set {self.name!r}: class ids must be 0..{len(self.classes) - 1} in order")
        by_name: dict[str, LabelClass] = {}
        for c in self.classes:
            for key in (c.name, *c.aliases):
                key = _normalise(key)
                if key in by_name:
                    raise ValueError(f"label set {self.name!r}: name {key!r} used twice")
                by_name[key] = c
        object.__setattr__(self, "_by_name", by_name)
        lut = np.zeros((256, 3), np.uint8)  # built once: colorize runs on every published frame
        for c in self.classes:
            lut[c.id] = c.color
        lut.flags.writeable = False
        object.__setattr__(self, "_palette", lut)

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def by_name(self, name: str) -> LabelClass:
        """Look a class up by its name or an alias, case- and space-insensitively. Raises KeyError naming the set."""
        try:
            return self._by_name[_normalise(name)]
        except KeyError:
            raise KeyError(f"label set {self.name!r} has no class {name!r}; it has {', '.join(self.names)}") from None

    def by_id(self, class_id: int) -> LabelClass:
        if not 0 <= class_id < len(self.classes):
            raise KeyError(f"label set {self.name!r} has no class id {class_id} (0..{len(self.classes) - 1})")
        return self.classes[class_id]

    def by_color(self, color: Colour) -> LabelClass:
        for c in self.classes:
            if c.color == tuple(int(v) for v in color):
                return c
        raise KeyError(f"label set {self.name!r} has no class with colour {tuple(color)}")

    def palette(self) -> np.ndarray:
        """(256, 3) uint8 RGB lookup table (read-only); ids outside the set (e.g. 255 = void) are black."""
        return self._palette

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """(H, W) uint8 class ids -> (H, W, 3) uint8 RGB."""
        return self.palette()[labels]


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", " ")


# ImageNet-1k indices of the classes a driving class shares with ILSVRC 2012 (paper 4.2 initialises those score rows
# from VGG-16's classifier). Several ImageNet classes per class are averaged.
_CAR = (436, 468, 511, 609, 627, 656, 717, 751, 817)  # beach wagon, cab, convertible, jeep, limousine, minivan, ...
_TRUCK = (555, 569, 675, 864, 867)  # fire engine, garbage truck, moving van, tow truck, trailer truck
_BUS = (654, 779, 874)  # minibus, school bus, trolleybus
_TRAIN = (466, 547, 565, 820, 829)  # bullet train, electric locomotive, freight car, steam locomotive, streetcar
_MOTORCYCLE = (665, 670)  # moped, motor scooter
_BICYCLE = (444, 671)  # bicycle-built-for-two, mountain bike
_TRAFFIC_LIGHT = (920,)
_TRAFFIC_SIGN = (919,)  # street sign
_FENCE = (489, 716, 912)  # chainlink fence, picket fence, worm fence
_WALL = (825,)  # stone wall
# Sets where one class stands for several ImageNet ones (measured on CamVid stills, docs/results/heatmaps_real.md):
_VEHICLE = _CAR + _TRUCK + _BUS + (734,)  # the drive set's "car" is every road vehicle (CamVid's Car class too)
_POLE = (733, 557)  # pole, flagpole
# ImageNet has no person class: what people wear and carry on a street, and the three person classes it has.
_PERSON = (399, 414, 474, 501, 568, 578, 608, 610, 617, 652, 655, 735, 748, 770, 834, 841, 869, 879, 981, 982, 983)

CITYSCAPES = LabelSet(
    "cityscapes",
    (
        LabelClass(0, "road", (128, 64, 128)),
        LabelClass(1, "sidewalk", (244, 35, 232)),
        LabelClass(2, "building", (70, 70, 70)),
        LabelClass(3, "wall", (102, 102, 156), _WALL),
        LabelClass(4, "fence", (190, 153, 153), _FENCE),
        LabelClass(5, "pole", (153, 153, 153)),
        LabelClass(6, "traffic light", (250, 170, 30), _TRAFFIC_LIGHT),
        LabelClass(7, "traffic sign", (220, 220, 0), _TRAFFIC_SIGN),
        LabelClass(8, "vegetation", (107, 142, 35)),
        LabelClass(9, "terrain", (152, 251, 152)),
        LabelClass(10, "sky", (70, 130, 180)),
        LabelClass(11, "person", (220, 20, 60)),
        LabelClass(12, "rider", (255, 0, 0)),
        LabelClass(13, "car", (0, 0, 142), _CAR),
        LabelClass(14, "truck", (0, 0, 70), _TRUCK),
        LabelClass(15, "bus", (0, 60, 100), _BUS),
        LabelClass(16, "train", (0, 80, 100), _TRAIN),
        LabelClass(17, "motorcycle", (0, 0, 230), _MOTORCYCLE),
        LabelClass(18, "bicycle", (119, 11, 32), _BICYCLE),
    ),
)

# Cityscapes `*_labelIds.png` values -> train ids above; every other labelId is void (255).
CITYSCAPES_LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

# The 11-class CamVid subset of SegNet and the paper, in SegNet's order and colours.
CAMVID = LabelSet(
    "camvid",
    (
        LabelClass(0, "sky", (128, 128, 128)),
        LabelClass(1, "building", (128, 0, 0)),
        LabelClass(2, "pole", (192, 192, 128)),
        LabelClass(3, "road", (128, 64, 128)),
        LabelClass(4, "sidewalk", (60, 40, 222), aliases=("pavement",)),
        LabelClass(5, "vegetation", (128, 128, 0), aliases=("tree",)),
        LabelClass(6, "sign symbol", (192, 128, 128), _TRAFFIC_SIGN + _TRAFFIC_LIGHT),
        LabelClass(7, "fence", (64, 64, 128), _FENCE),
        LabelClass(8, "car", (64, 0, 128), _CAR),
        LabelClass(9, "pedestrian", (64, 64, 0)),
        LabelClass(10, "bicyclist", (0, 128, 192)),
    ),
)

# The project's default driving set: what the synthetic drives render and the shipped model predicts.
# Colours follow Cityscapes so overlays look the same across sets.
DRIVE = LabelSet(
    "drive",
    (
        LabelClass(0, "road", (128, 64, 128)),
        LabelClass(1, "sidewalk", (244, 35, 232)),
        LabelClass(2, "vegetation", (107, 142, 35)),
        LabelClass(3, "building", (70, 70, 70)),
        LabelClass(4, "sky", (70, 130, 180)),
        LabelClass(5, "pole", (153, 153, 153), _POLE),
        LabelClass(6, "car", (0, 0, 142), _VEHICLE),
        LabelClass(7, "person", (220, 20, 60), _PERSON),
    ),
)

LABEL_SETS: dict[str, LabelSet] = {s.name: s for s in (CITYSCAPES, CAMVID, DRIVE)}

VOID_ID = 255


def get_label_set(name: str) -> LabelSet:
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise KeyError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}") from None
