"""pip packaging of the Python side of metric_solver_ros.

A ROS 2 workspace builds this package with CMake (``package.xml`` says ament_cmake; see
``CMakeLists.txt``). This file serves the virtual-environment flow of the Makefile
(``pip install -e .`` next to interfaces built by CMake) and users who want the model, training
and evaluation tools without ROS 2: ``pip install .`` gives everything but the node.
"""

from setuptools import find_packages, setup

setup(
    name='metric_solver_ros',
    version='0.1.0',
    description='Metric-Solver monocular metric depth: model, engine, training and ROS 2 node',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['metric_solver_ros', 'metric_solver_ros.*']),
    package_data={'metric_solver_ros': ['weights/*.safetensors', 'weights/*.json']},
    install_requires=[
        'numpy>=1.24',
        'torch>=2.1',
        'safetensors>=0.4',
        'opencv-python-headless>=4.8',
        'PyYAML>=6',
        'tqdm>=4.60',
        'matplotlib>=3.7',
        'rosbags>=0.11',
    ],
    entry_points={
        'console_scripts': [
            'depth_node = metric_solver_ros.node:main',
            'depth_lifecycle_node = metric_solver_ros.lifecycle_node:main',
            'metric-solver = metric_solver_ros.cli:main',
        ],
    },
)
