"""sitecustomize for the base-install smoke venv (scripts/base_install_smoke.sh): lets torchvision
0.28.0 import next to torch 2.13.0+cpu.

This is about this build machine's wheel mix, not about grefine: torch 2.13.0 comes as a CPU wheel
from the local wheel folder while torchvision 0.28.0 (which requires exactly torch 2.13.0) exists
only as the CUDA build, whose compiled extension ``torchvision/_C.so`` links ``libtorch_cuda.so``.
That extension cannot load here, so the operator schemas it would register are missing, and
``import torchvision`` fails in its fake-tensor registrations with
``RuntimeError: operator torchvision::nms does not exist``.

The fix: just before torchvision is first imported, if its extension cannot load, declare the two
schemas it registers fakes for (``torchvision::nms`` and ``torchvision::qnms``) in a ``FRAGMENT``
library. Everything pure-Python then works (transforms, models, ``FrozenBatchNorm2d``: all that
open_clip, timm, transformers and diffusers use); the compiled ops themselves (nms, roi_align,
deform_conv2d) still raise when called. Where the extension loads (a matching torch build), this
does nothing. Installed as ``sitecustomize.py`` it costs nothing at start-up: torch is imported
only when torchvision is.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import sys
from pathlib import Path

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
)
#: Kept alive for the life of the process: dropping a ``torch.library.Library`` removes its ops.
_LIBRARIES: list[object] = []
#: What the shim did: "" (torchvision not imported yet), "native" or "shimmed".
MODE = ""


def _extension_loads(package_dir: Path) -> bool:
    """Whether torchvision's compiled extension can be loaded next to the imported torch."""
    found = sorted(package_dir.glob("_C*.so")) + sorted(package_dir.glob("_C*.pyd"))
    if not found:
        return False
    try:
        ctypes.CDLL(str(found[0]))
    except OSError:
        return False
    return True


def prepare() -> str:
    """Declare the missing schemas if torchvision's extension cannot load; returns the mode."""
    global MODE
    spec = importlib.machinery.PathFinder.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return MODE  # torchvision is not installed: nothing to do
    import torch  # torchvision imports it first anyway; its libraries must be loaded for the test

    if _extension_loads(Path(next(iter(spec.submodule_search_locations)))):
        MODE = "native"
        return MODE
    library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        library.define(schema)
    _LIBRARIES.append(library)
    MODE = "shimmed"
    return MODE


class _BeforeTorchvision:
    """A meta-path finder that runs :func:`prepare` once, when torchvision is first imported,
    and then lets the normal finders import it."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            prepare()
        return None


if "torchvision" not in sys.modules and not any(
    isinstance(f, _BeforeTorchvision) for f in sys.meta_path
):
    sys.meta_path.insert(0, _BeforeTorchvision())
