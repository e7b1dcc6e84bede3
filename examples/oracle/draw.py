"""Draw the planted-truth scenes of the ``oracle`` preset and write ``prompts.csv`` beside them.

Run from anywhere: ``python examples/oracle/draw.py``. The scenes come from
``grefine_clip.oracle_scenes`` (docs/behaviour.md says what each one should give).
"""

from __future__ import annotations

import csv
from pathlib import Path

from grefine_clip.oracle_scenes import SCENES

HERE = Path(__file__).resolve().parent


def main() -> None:
    rows = []
    for name, scene in SCENES.items():
        scene.image().save(HERE / f"{name}.png")
        rows.append((f"{name}.png", scene.prompt))
    with open(HERE / "prompts.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("image", "prompt"))
        writer.writerows(rows)
    print(f"wrote {len(rows)} scenes and prompts.csv to {HERE}")


if __name__ == "__main__":
    main()
