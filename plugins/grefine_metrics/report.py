"""Outputs of ``grefine eval refine``: the Markdown table, per-metric bar plots and contact sheets.

Plots use matplotlib's object API with the Agg canvas (no pyplot state, no display needed). Every
file is written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from grefine_quality.extras import require
from PIL import Image, ImageDraw, ImageFont

from grefine_core import atomic as _atomic
from grefine_metrics.registry import Metric

#: What to run when matplotlib (the plots) is missing.
PLOTS_HINT = 'pip install "grefine[eval]" (or --no-plots)'


def _matplotlib(module: str) -> Any:
    return require(module, plugin="metrics", what="matplotlib for its plots", extra=PLOTS_HINT)


def require_plots() -> None:
    """Check that the plots can be drawn, before an evaluation spends its time.

    :raises MissingExtraError: matplotlib is not installed (``pip install "grefine[eval]"``).
    """
    _matplotlib("matplotlib.figure")


NEGATIVE_MARK = "†"


def format_value(value: float | None) -> str:
    """Four significant decimals like the paper's tables; ``∞`` and ``n/a`` for the odd cases."""
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.2f}"
    if magnitude >= 10:
        return f"{value:.3f}"
    return f"{value:.4f}"


def _is_best(value: float, best: float | None) -> bool:
    if best is None or math.isnan(value):
        return False
    return value == best or math.isclose(value, best, rel_tol=1e-12, abs_tol=0.0)


def render_table(
    summary: dict[str, Any],
    metrics: Sequence[Metric],
    skipped: dict[str, str] | None = None,
    failures: Sequence[dict[str, str]] = (),
) -> str:
    """The results table in the paper's layout (one row per method, one column per metric).

    The first row holds the original images' means (where they do not depend on the method);
    the best method per column is bold; a mean that got worse than the original's is marked
    :data:`NEGATIVE_MARK`; the last column counts per-image negative optimisations.
    """
    methods: list[str] = summary["methods"]
    headers = ["Method", *[m.header for m in metrics], "Neg. opt."]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|",
    ]
    orig_cells = ["*Original images*"]
    for m in metrics:
        value = summary["original"].get(m.name)
        orig_cells.append("—" if value is None else format_value(value))
    orig_cells.append("")
    lines.append("| " + " | ".join(orig_cells) + " |")
    for method in methods:
        stats = summary["per_method"][method]
        cells = [f"`{method}`"]
        for m in metrics:
            value = stats["mean_after"][m.name]
            text = format_value(value)
            if _is_best(value, summary["best"].get(m.name)) and len(methods) > 1:
                text = f"**{text}**"
            if m.name in stats["negative_mean_metrics"]:
                text += NEGATIVE_MARK
            cells.append(text)
        cells.append(f"{stats['negative_optimisations']}/{stats['comparisons']}")
        lines.append("| " + " | ".join(cells) + " |")

    n = summary["images"]
    notes = [
        "",
        f"Means over {n} image{'s' if n != 1 else ''}. ↑ higher is better, ↓ lower is better; "
        "columns without an arrow are informational. **Bold**: the best method in the column.",
        f"{NEGATIVE_MARK} Negative optimisation: on average the method made this metric worse than "
        "the original images were (mean after refinement vs mean before, on the same images).",
        "Neg. opt.: the number of image × metric pairs in which the refined image scored worse than "
        "its original, out of the pairs that have a before-value. — in the first row: no "
        "before-value (full-reference metrics compare the refined image with the original; "
        "informational ones have no better side) or one that depends on each method's mask.",
        "n/a: not defined for these images (e.g. NIQE needs at least 96x192 pixels). "
        "PSNR of identical pixels is infinite and counts as 100 dB in means.",
    ]
    if skipped:
        notes.append("")
        notes.append("Skipped metrics:")
        notes += [f"- `{name}`: {reason}" for name, reason in skipped.items()]
    if failures:
        notes.append("")
        notes.append(f"Failed runs ({len(failures)}), left out of the means:")
        notes += [f"- `{f['method']}` on `{f['image']}`: {f['error']}" for f in failures[:20]]
        if len(failures) > 20:
            notes.append(f"- ... and {len(failures) - 20} more (see summary.json)")
    return "\n".join(lines + notes) + "\n"


def _png_bytes(figure: Any) -> bytes:
    _matplotlib("matplotlib.backends.backend_agg").FigureCanvasAgg(figure)
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def plot_metric(path: Path, metric: Metric, summary: dict[str, Any]) -> None:
    """A bar per method of the mean after-value (error bar: std over images); a dashed line at
    the original images' mean when it exists."""
    Figure = _matplotlib("matplotlib.figure").Figure

    methods = summary["methods"]
    means = [summary["per_method"][m]["mean_after"][metric.name] for m in methods]
    stds = [summary["per_method"][m]["std_after"][metric.name] for m in methods]
    heights = [0.0 if (math.isnan(v) or math.isinf(v)) else v for v in means]
    fig = Figure(figsize=(max(4.0, 1.1 * len(methods) + 2), 3.4))
    ax = fig.add_subplot(1, 1, 1)
    colors = [
        "#4C72B0"
        if metric.name not in summary["per_method"][m]["negative_mean_metrics"]
        else "#C44E52"
        for m in methods
    ]
    ax.bar(range(len(methods)), heights, yerr=stds, color=colors, capsize=4)
    for i, v in enumerate(means):
        ax.annotate(
            format_value(v),
            (i, heights[i]),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    original = summary["original"].get(metric.name)
    if original is not None and math.isfinite(original):
        ax.axhline(original, color="black", linestyle="--", linewidth=1, label="original images")
        ax.legend(loc="best", fontsize=8)
    ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right")
    ax.set_title(
        f"{metric.header}: {metric.description}" if metric.description else metric.header,
        fontsize=9,
    )
    ax.set_ylabel(metric.label or metric.name)
    fig.tight_layout()
    _atomic.write_bytes(path, _png_bytes(fig))


def _thumbnail(image: Image.Image, size: int) -> Image.Image:
    img = image.convert("RGB")
    scale = size / max(img.size)
    new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    # enlarge small images with visible pixels; shrink large ones smoothly
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
    img = img.resize(new, resample)
    canvas = Image.new("RGB", (size, size), (40, 40, 40))
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas


def mask_overlay(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """The image darkened, with the mask's pixels tinted red."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    m = np.asarray(mask, dtype=np.float32)
    if m.shape != rgb.shape[:2]:
        m = (
            np.asarray(
                Image.fromarray((m > 0.5).astype(np.uint8) * 255).resize(
                    image.size, Image.Resampling.NEAREST
                )
            )
            / 255.0
        )
    m = np.clip(m, 0.0, 1.0)[..., None]
    red = np.array([230.0, 40.0, 40.0])
    out = rgb * 0.45 + m * (0.55 * red)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def difference_map(before: Image.Image, after: Image.Image, gain: float = 4.0) -> Image.Image:
    """Grey image of the per-pixel change ``max_c |after - before| * gain`` (black: unchanged)."""
    a = np.asarray(before.convert("RGB"), dtype=np.float32)
    b = np.asarray(after.convert("RGB"), dtype=np.float32)
    diff = np.clip(np.abs(b - a).max(axis=2) * gain, 0, 255).astype(np.uint8)
    return Image.fromarray(diff).convert("RGB")


def contact_sheet(
    path: Path,
    original: Image.Image,
    panels: Sequence[tuple[str, Image.Image | None, np.ndarray | None]],
    title: str = "",
    size: int = 224,
) -> None:
    """Write a contact sheet: the original and each method's refined image on the top row, each
    method's mask (red over the darkened original; "no mask" when absent) on the second, and
    where each method changed the image (``|after - before|``, amplified 4x) on the third.

    :param panels: ``(method, refined image or None when missing, mask or None)`` per method.
    """
    label_h, pad = 18, 6
    cols = 1 + len(panels)
    width = cols * (size + pad) + pad
    height = 3 * (size + label_h + pad) + pad + (label_h if title else 0)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    top = label_h if title else 0
    if title:
        draw.text((pad, 2), title[:160], fill=(0, 0, 0), font=font)

    def place(col: int, row: int, label: str, image: Image.Image | None, note: str = "") -> None:
        x = pad + col * (size + pad)
        y = top + pad + row * (size + label_h + pad)
        draw.text((x, y), label[:36], fill=(0, 0, 0), font=font)
        if image is None:
            draw.rectangle(
                (x, y + label_h, x + size - 1, y + label_h + size - 1), outline=(160, 160, 160)
            )
            draw.text((x + 8, y + label_h + size // 2 - 6), note, fill=(120, 120, 120), font=font)
        else:
            sheet.paste(_thumbnail(image, size), (x, y + label_h))

    place(0, 0, "original (before)", original)
    for i, (method, refined, mask) in enumerate(panels, start=1):
        place(i, 0, f"{method} (after)", refined, "missing")
        if mask is not None and refined is not None:
            place(i, 1, f"{method} mask", mask_overlay(original.resize(refined.size), mask))
        else:
            place(i, 1, f"{method} mask", None, "no mask")
        if refined is not None:
            place(
                i,
                2,
                f"{method} |change| x4",
                difference_map(original.resize(refined.size), refined),
            )
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    _atomic.write_bytes(path, buf.getvalue())
