"""G-Refine nodes for ComfyUI (docs/comfyui.md).

Copy or symlink this folder into ``ComfyUI/custom_nodes/`` (e.g. as ``grefine_comfyui``) and
install grefine into ComfyUI's Python environment. ComfyUI imports the folder as a package and
reads the two mappings below.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
