"""The two-stream network (paper Fig. 3), its VGG-16 and EfficientNet-Lite0 initialisations and its checkpoint file."""

from wsvs_ros.model.checkpoint import Checkpoint, build_model, load_checkpoint, save_checkpoint
from wsvs_ros.model.efficientnet_init import load_efficientnet_lite0_weights
from wsvs_ros.model.two_stream import TwoStreamNet
from wsvs_ros.model.vgg_init import load_vgg16_weights

__all__ = [
    "Checkpoint",
    "TwoStreamNet",
    "build_model",
    "load_checkpoint",
    "load_efficientnet_lite0_weights",
    "load_vgg16_weights",
    "save_checkpoint",
]
