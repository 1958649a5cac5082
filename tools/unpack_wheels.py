"""Unpack wheels into a folder for PYTHONPATH (the lent GPU machine has no pip or registry).

A wheel is a zip of the files an install would place in site-packages; pure and binary wheels
without install scripts (numpy, safetensors, PyYAML, pytest, ...) work unpacked as they are.
Executables a wheel ships (``NAME-VERSION.data/scripts/``, e.g. py-spy) are made executable:
put ``TARGET/*.data/scripts`` on PATH to run them.

    python tools/unpack_wheels.py TARGET WHEEL [WHEEL ...]
"""

import pathlib
import sys
import zipfile

if __name__ == '__main__':
    target, *wheels = sys.argv[1:]
    for wheel in wheels:
        zipfile.ZipFile(wheel).extractall(target)  # (zipfile drops the permission bits)
    for script in pathlib.Path(target).glob('*.data/scripts/*'):
        script.chmod(0o755)
