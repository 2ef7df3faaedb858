"""Python packaging of madm for machines without ROS 2 (pip) and the console scripts.

On a ROS 2 install the same sources are built by colcon through CMakeLists.txt instead; the
executables registered there are kept in step with ``console_scripts`` below
(tests/test_packaging.py checks it).
"""

from glob import glob

from setuptools import find_packages, setup

setup(
    name="madm_ros",
    version="0.1.0",
    description="Semantic segmentation of depth, thermal and event cameras for ROS 2, adapted from RGB with MADM",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["madm_ros", "madm_ros.*", "madm_train", "madm_train.*"]),
    # the component configs of SD v1.x/v2.x that single-file checkpoints lack (madm_train.models.stable_diffusion)
    package_data={"madm_ros": ["py.typed"],
                  "madm_train": ["py.typed", "models/sd_configs/*/*.json", "models/sd_configs/*/*/*.json"]},
    # node parameter files, RViz config and launch files where `python -m madm_ros.launch` looks for them
    # (<prefix>/share/madm_ros/...), as colcon installs them on ROS
    data_files=[("share/madm_ros/config", sorted(glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml"))),
                ("share/madm_ros/launch", sorted(glob("launch/*.launch.py")))],
    install_requires=["numpy>=1.24", "pyyaml>=6", "opencv-python-headless>=4.8", "numba>=0.59", "tqdm>=4.60",
                      "pillow>=10"],
    extras_require={
        "events": ["h5py>=3.8", "hdf5plugin>=4", "aedat>=2", "rosbags>=0.10"],
        "train": ["torch>=2.1", "diffusers>=0.30", "transformers>=4.40", "peft>=0.10", "onnx>=1.16", "onnxruntime>=1.17"],
        "tensorrt": ["tensorrt>=10"],
    },
    entry_points={
        "console_scripts": [
            "madm_doctor=madm_ros.doctor:main",
            "image_segmentation=madm_ros.nodes.image_segmentation:main",
            "event_segmentation=madm_ros.nodes.event_segmentation:main",
        ],
    },
)
