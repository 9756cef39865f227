"""The wheel of this package that a shared bundle carries, so its configs' ``pipeline.*`` targets import anywhere."""

from __future__ import annotations

import calendar
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pipeline
from pipeline.export.errors import BundleExportError
from pipeline.export.package import ZIP_DATE

WHEEL_DIR = "wheels"
# The folder holding pyproject.toml and the package: present in a clone of the repository, absent where the package
# was installed from a wheel.
SOURCE_TREE = Path(pipeline.__file__).resolve().parents[1]
# The wheel's files get the zip's fixed date, so the wheel, like the zip, depends on the sources' content only.
SOURCE_DATE_EPOCH = str(calendar.timegm(ZIP_DATE))


def build_wheel(wheel_dir: Path, source_tree: Path = SOURCE_TREE) -> Path:
    """Build the wheel of the package from ``source_tree`` into ``wheel_dir`` and return its path.

    The top-level files of ``source_tree`` (``pyproject.toml``, ``README.md``, ``LICENSE``) and the package folder
    are copied to a temporary folder first and built there with ``pip wheel --no-deps --no-build-isolation``:
    nothing is written into the source tree, no file left in a stale ``build/`` folder can slip into the wheel, and
    no network is needed (the build backend, setuptools, is a requirement of PyTorch). Raises
    :class:`BundleExportError` when ``source_tree`` holds no ``pyproject.toml`` or the build fails.
    """
    if not (source_tree / "pyproject.toml").is_file():
        raise BundleExportError(
            f"{source_tree}: no pyproject.toml, so the package wheel a shared bundle carries cannot be built; "
            "export from a clone of the repository (pip install -e .)"
        )
    package = source_tree / pipeline.__name__
    with tempfile.TemporaryDirectory(prefix="bundle-wheel-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        for path in source_tree.iterdir():
            if path.is_file():
                shutil.copy2(path, project / path.name)
        shutil.copytree(package, project / package.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        built = Path(tmp) / "built"
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        command += ["--wheel-dir", str(built), str(project)]
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        wheels = sorted(built.glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            last_line = (result.stderr.strip().splitlines() or ["no wheel written"])[-1]
            raise BundleExportError(f"{source_tree}: building the package wheel failed ({last_line})")
        wheel_dir.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(wheels[0], wheel_dir / wheels[0].name))
