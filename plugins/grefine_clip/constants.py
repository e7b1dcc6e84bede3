"""Facts of the CLIP Surgery backbone (docs/indicators.md). Plain Python only (no torch)."""

from __future__ import annotations

#: CLIP Surgery replaces the last this-many vision blocks by dual-path blocks.
SURGERY_LAYERS = 6
