"""Unpack wheels into a folder for PYTHONPATH (the lent GPU machine has no pip or registry).

A wheel is a zip of the files an install would place in site-packages; pure and binary wheels
without install scripts (numpy, safetensors, PyYAML, pytest, ...) work unpacked as they are.
Executables a wheel ships (``NAME-VERSION.data/scripts/``, e.g. py-spy) go to ``TARGET/bin``,
executable: put that on PATH to run them.

    python tools/unpack_wheels.py TARGET WHEEL [WHEEL ...]
"""

import pathlib
import sys
import zipfile

if __name__ == '__main__':
    target, *wheels = sys.argv[1:]
    for wheel in wheels:
        zipfile.ZipFile(wheel).extractall(target)
    bin_dir = pathlib.Path(target) / 'bin'
    bin_dir.mkdir(parents=True, exist_ok=True)
    for script in pathlib.Path(target).glob('*.data/scripts/*'):
        script = script.rename(bin_dir / script.name)
        script.chmod(0o755)  # zipfile does not keep permission bits
