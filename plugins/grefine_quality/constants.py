"""Facts the indicators depend on: PQ file hashes, the end-of-text row, cask bounds, the
similarity-map epsilons.

Plain Python only (no torch), so the plugin modules can import it cheaply.
"""

from __future__ import annotations

import os
from pathlib import Path

#: PQ-Map factors, in the order the released code uses them.
PQ_FACTORS: tuple[str, ...] = ("overall", "technical", "rational", "natural")

#: sha256 of the authors' learned prompt files (Q-Future/Q-Refine @ 65a82f1, folder ``embeding/``).
PQ_SHA256: dict[str, str] = {
    "overall": "7368cf8e1a0bac656e7c2b9cbffcd2b23587a06c9615e9f56f0849c5010611cc",
    "technical": "8b674a47a44e78e09bfd9a1ada66f2c49cb280cb59afdceab500b63f758343a2",
    "rational": "ed30d8c34799524c213f274ffa83d86cd0adc31b461437bd9d57b04e882d936c",
    "natural": "e7546e0470f95a15176d5c8f897aaa0d65c2dbcbebfcf0a81295115845799e30",
}

#: Commit of the authors' repository the prompt files come from.
PQ_COMMIT = "65a82f17e4e660576bba796ca8ea9516f2d5381f"

#: Folder URL of the four ``PQ-<factor>.pth`` files (raw GitHub, pinned commit).
PQ_BASE_URL = f"https://raw.githubusercontent.com/Q-Future/Q-Refine/{PQ_COMMIT}/embeding"

#: Environment variable naming a folder that holds the four PQ files.
PQ_ENV_VAR = "GREFINE_PQ_DIR"

#: Index of the end-of-text row in the assembled PQ prompt (1 + 8 ctx + 3 suffix + 8 ctx).
PQ_EOT_INDEX = 20

#: Cask bounds alpha_i for (technical, rational, natural), paper Eq. 3.
PAPER_CASK_BOUNDS: tuple[float, float, float] = (0.935 * 1.0, 0.892 * 0.6, 0.826 * 0.8)
#: The released PQ-Map.py divides all three factors by the first bound.
REFERENCE_CASK_BOUNDS: tuple[float, float, float] = (0.935, 0.935, 0.935)

#: Epsilon of the similarity map's min-max normalisation (a constant map gives 0, never NaN).
SIM_MAP_EPS = 1e-8
#: A similarity map whose range is at most this (relative to its magnitude, at least 1) is flat:
#: float32 rounding of a constant map, not a signal, so it gives 0 instead of amplified noise.
SIM_MAP_FLAT = 1e-6


def pq_filename(factor: str) -> str:
    """File name of the learned prompt of ``factor`` (``PQ-overall.pth`` ...)."""
    return f"PQ-{factor}.pth"


#: Where downloaded prompt files go by default.
DEFAULT_PQ_CACHE = Path("~/.cache/grefine/pq_embeddings")


def pq_search_dirs() -> list[Path]:
    """Folders searched for the four ``PQ-*.pth`` files when none is given, in order:
    ``$GREFINE_PQ_DIR``, then ``~/.cache/grefine/pq_embeddings``."""
    dirs: list[Path] = []
    env = os.environ.get(PQ_ENV_VAR)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(DEFAULT_PQ_CACHE.expanduser())
    return dirs
