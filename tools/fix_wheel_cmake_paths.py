"""Point the ROS 2 wheels' CMake configs at this interpreter's headers.

The PyPI ROS 2 wheels were built on a manylinux image and their exported CMake targets name that
machine's Python and NumPy include directories (``/opt/python/cp3XX-cp3XX/...``). Building our
interfaces against the wheels needs those paths to exist, so this rewrites them, in place, to the
include directories of the Python that runs this script (the virtual environment's). Idempotent.

Usage: python tools/fix_wheel_cmake_paths.py PREFIX   (PREFIX: the venv, holding share/)
"""

import pathlib
import re
import sys
import sysconfig

import numpy

_PYTHON_INCLUDE = re.compile(r'/opt/python/cp3\d+-cp3\d+/include/python3\.\d+')
_NUMPY_INCLUDE = re.compile(
    r'/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/_?core/include')


def main(prefix: str) -> int:
    """Rewrite every ``share/*/cmake/*.cmake`` under ``prefix``; return a process exit code."""
    python_include = sysconfig.get_paths()['include']
    numpy_include = numpy.get_include()
    changed = 0
    for path in pathlib.Path(prefix, 'share').glob('*/cmake/*.cmake'):
        text = path.read_text()
        new = _NUMPY_INCLUDE.sub(numpy_include, text)
        new = _PYTHON_INCLUDE.sub(python_include, new)
        if new != text:
            path.write_text(new)
            changed += 1
    print(f'fix_wheel_cmake_paths: {changed} file(s) rewritten under {prefix}/share')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else sys.prefix))
