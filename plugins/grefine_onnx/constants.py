"""Names and versions of the ONNX export layout (plain Python, no heavy imports)."""

from __future__ import annotations

#: Bumped whenever the exported graphs or the manifest layout change: old exports are re-made.
EXPORT_FORMAT = "grefine-onnx/1"

#: The manifest written next to the ``.onnx`` files.
MANIFEST_NAME = "manifest.json"

#: Graph names -> file names. ``image``: pixels -> surgery tokens; ``text``: token ids ->
#: features; ``prompt_text``: learned prompt embeddings (PQ) -> features.
PART_FILES: dict[str, str] = {
    "image": "image.onnx",
    "text": "text.onnx",
    "prompt_text": "prompt_text.onnx",
}
ALL_PARTS: tuple[str, ...] = tuple(PART_FILES)

#: Input / output names of each graph.
IO_NAMES: dict[str, tuple[str, str]] = {
    "image": ("pixel_values", "tokens"),
    "text": ("token_ids", "features"),
    "prompt_text": ("embeddings", "features"),
}

#: Environment variable naming the default export cache folder.
CACHE_ENV_VAR = "GREFINE_ONNX_CACHE"
DEFAULT_CACHE_DIR = "~/.cache/grefine/onnx"
