"""Unpack wheels into a folder for PYTHONPATH (the lent GPU machine has no pip or registry).

A wheel is a zip of the files an install would place in site-packages; pure and binary wheels
without install scripts (numpy, safetensors, PyYAML, pytest, ...) work unpacked as they are.

    python tools/unpack_wheels.py TARGET WHEEL [WHEEL ...]
"""

import sys
import zipfile

if __name__ == '__main__':
    target, *wheels = sys.argv[1:]
    for wheel in wheels:
        zipfile.ZipFile(wheel).extractall(target)
