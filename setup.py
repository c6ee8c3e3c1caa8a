"""ament_python package setup; works with colcon and with `pip install -e .`."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "ros2_s2dhm"

TOOLS = [
    "build_map", "evaluate", "make_synthetic", "benchmark", "finetune",
    "make_bag", "play_bag", "record_poses", "demo", "train_retrieval", "retrieval_check", "verify_map", "soak",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "offline_tools", "offline_tools.*"]),
    package_data={PACKAGE: ["weights/*.pth", "weights/*.md", "ros/profiles/*.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="ros2_s2dhm maintainers",
    maintainer_email="maintainers@ros2-s2dhm.dev",
    description="S2DHM-style 6-DoF visual localization node for ROS 2",
    license="BSD-3-Clause",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [f"localizer_node = {PACKAGE}.ros.localizer_node:main",
                            f"lifecycle_localizer_node = {PACKAGE}.ros.localizer_node:lifecycle_main"]
        + [f"{tool} = offline_tools.{tool}:main" for tool in TOOLS],
    },
)
