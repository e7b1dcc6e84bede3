"""Regenerate the planted-truth gallery of docs/behaviour.md: refine each oracle scene, save its
overview (input | P | A_defect | mask | stage-1 output) and rewrite the outcome table between the
``<!-- gallery:start -->`` and ``<!-- gallery:end -->`` markers.

    python scripts/oracle_gallery.py            # writes docs/images/behaviour/ and docs/behaviour.md
    python scripts/oracle_gallery.py --out DIR  # writes DIR/*.png and DIR/gallery.md only

The oracle backbone proves the logic of the method on lexicon scenes, not image quality: the
stage models are tiny random-weight ones, so "refined" pixels are noise by design.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "behaviour.md"
IMAGES = ROOT / "docs" / "images" / "behaviour"
START, END = "<!-- gallery:start -->", "<!-- gallery:end -->"

#: (label, disabled plugins) of the runs in the outcome table.
RUNS = (("full method", ()), ("without AQ", ("clip_aq",)), ("without PQ", ("clip_pq",)))
#: The pictures show stage 1's output: the tiny PASD's random weights would repaint every pixel
#: of a refined image and hide where stage 1 worked.
PICTURE_DISABLE = ["pasd"]


def outcome(result) -> str:
    """One table cell: what the run decided."""
    if result.high_quality:
        return "high quality: returned unchanged"
    found = result.alignment.defects if result.alignment is not None else []
    defects = ", ".join(f"{ph.text} ({ph.defect})" for ph in found)
    masked = f"mask {result.mask.fraction:.0%}"
    stage1 = result.stage("stage1")
    ran = "stage 1 + 2" if stage1 and stage1.status == "ran" else "stage 2 only"
    return f"{masked}; {defects or 'no defect'}; {ran}"


def build(out_dir: Path, image_prefix: str) -> str:
    """Run every scene, write ``<scene>.png`` overviews into ``out_dir``, return the markdown."""
    from grefine_clip.oracle_scenes import SCENES

    from grefine_core import GRefine, load_config

    out_dir.mkdir(parents=True, exist_ok=True)
    pipes = {
        label: GRefine(load_config(preset="oracle", overrides={"disable": list(off)}, environ={}))
        for label, off in RUNS
    }
    picture = GRefine(
        load_config(preset="oracle", overrides={"disable": PICTURE_DISABLE}, environ={})
    )
    head = "| scene | prompt | p | a | " + " | ".join(label for label, _ in RUNS) + " |"
    rows = [head, "|" + " --- |" * (4 + len(RUNS))]
    figures = []
    for name, scene in SCENES.items():
        results = [pipes[label].refine(scene.image(), scene.prompt, name=name) for label, _ in RUNS]
        cells = [outcome(r) for r in results]
        full = results[0]
        rows.append(
            f"| `{name}` | {scene.prompt} | {full.p:.3f} | {full.a:.3f} | "
            + " | ".join(cells)
            + " |"
        )
        with tempfile.TemporaryDirectory() as tmp:
            picture.refine(scene.image(), scene.prompt, name=name).save(tmp, stem=name)
            shutil.copyfile(Path(tmp) / f"{name}_maps" / "overview.png", out_dir / f"{name}.png")
        figures.append(
            f'**`{name}`** ({scene.note}): "{scene.prompt}"\n\n'
            f"![{name}: input, P, A_defect, mask, output]({image_prefix}{name}.png)\n"
        )
    return "\n".join(rows) + "\n\n" + "\n".join(figures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write here instead of docs/")
    args = parser.parse_args(argv)
    if args.out:
        text = build(args.out, "")
        (args.out / "gallery.md").write_text(text, encoding="utf-8")
        print(f"wrote the gallery to {args.out}")
        return 0
    text = build(IMAGES, "images/behaviour/")
    doc = DOC.read_text(encoding="utf-8")
    if START not in doc or END not in doc:
        print(f"error: {DOC} lacks the {START} / {END} markers", file=sys.stderr)
        return 2
    before, rest = doc.split(START, 1)
    after = rest.split(END, 1)[1]
    DOC.write_text(f"{before}{START}\n{text}{END}{after}", encoding="utf-8")
    print(f"wrote {IMAGES} and the gallery of {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
