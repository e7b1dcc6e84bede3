"""``grefine export-onnx``: export the CLIP Surgery encoders to ONNX.

The core CLI delegates ``grefine export-onnx ARGS`` to :func:`main` with ``ARGS``::

    grefine export-onnx --model ViT-B-16 --pretrained openai --out DIR [--fp16] [--static]
    grefine export-onnx --model tiny --out DIR --check

Exit codes: 0 done (or already up to date), 1 a failed parity check, 2 bad usage or input
(unknown model, missing weights, a foreign export in ``--out`` without ``--force``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from grefine_core.errors import GRefineError, UsageError

log = logging.getLogger("grefine.onnx")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="grefine export-onnx",
        description="Export the CLIP Surgery image encoder, the text encoder and the PQ prompt "
        "path to ONNX, with a manifest (weights hash, opset, shapes, dtype).",
    )
    p.add_argument(
        "--model",
        required=True,
        help="open_clip model name (ViT-B-16 with --pretrained openai gets QuickGELU), 'tiny', "
        "or a path to an OpenAI-format .pt/.safetensors file or folder",
    )
    p.add_argument(
        "--pretrained",
        default="openai",
        help="open_clip pretrained tag (default: openai); '' builds random weights",
    )
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--fp16", action="store_true", help="float16 weights and compute (for GPUs)")
    p.add_argument(
        "--static", action="store_true", help="static shapes for TensorRT (no dynamic batch)"
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    p.add_argument("--static-image-batch", type=int, default=1, metavar="N")
    p.add_argument("--static-text-batch", type=int, default=64, metavar="N")
    p.add_argument(
        "--parts",
        default="image,text,prompt_text",
        help="comma-separated graphs to export (default: image,text,prompt_text)",
    )
    p.add_argument("--cache-dir", default="", help="open_clip / Hugging Face cache folder")
    p.add_argument(
        "--force", action="store_true", help="overwrite an export of other weights or options"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="compare every graph with the torch model on the CPU (max abs diff)",
    )
    return p


def _load_clip(model: str, pretrained: str, cache_dir: str):
    """The torch ``clip`` backbone to export, found through the plugin host."""
    from grefine_core.plugins import PluginHost
    from grefine_onnx.runtime import torch_backbone

    if model != "tiny" and not pretrained and not Path(model).expanduser().exists():
        log.warning("export-onnx: --pretrained '' builds %s with RANDOM weights", model)
    host = PluginHost()
    settings_model = host.settings_models().get("clip")
    if settings_model is None:
        raise UsageError(
            "export-onnx needs the torch backbone of the 'clip' plugin, which is not loaded "
            "(see `grefine plugins`)"
        )
    settings = settings_model(model=model, pretrained=pretrained, cache_dir=cache_dir)
    return torch_backbone(settings, host.backbones())


def run(args: argparse.Namespace) -> int:
    from grefine_onnx.constants import PART_FILES
    from grefine_onnx.export import ExportOptions, architecture, export_clip, export_key
    from grefine_onnx.hashing import clip_weights_sha256
    from grefine_onnx.manifest import check_export
    from grefine_onnx.providers import import_onnx, import_onnxruntime
    from grefine_onnx.verify import TOLERANCE, parity

    import_onnx()  # a missing [onnx] extra is named before any model loads
    if args.check:
        import_onnxruntime()
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = [p for p in parts if p not in PART_FILES]
    if unknown or not parts:
        raise UsageError(
            f"--parts: unknown graph(s) {unknown or '(none)'}; valid: {', '.join(PART_FILES)}"
        )
    if args.opset < 17:
        raise UsageError(f"--opset must be >= 17, got {args.opset}")
    options = ExportOptions(
        opset=args.opset,
        fp16=args.fp16,
        static=args.static,
        static_image_batch=args.static_image_batch,
        static_text_batch=args.static_text_batch,
        parts=parts,
    )
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a folder")
    start = time.perf_counter()
    clip = _load_clip(args.model, args.pretrained, args.cache_dir)
    weights = clip_weights_sha256(clip)
    key = export_key(weights, options, architecture(clip))
    check = check_export(out, key=key, weights_sha256=weights, parts=parts)
    if check.ok and not args.force:
        manifest = check.manifest
        done = "up to date (nothing exported)"
    else:
        if check.status == "foreign" and not args.force:
            raise UsageError(
                f"--out {str(out)!r}: {check.reason}. Use --force to overwrite it, or choose "
                "another --out"
            )
        if check.status == "stale":
            print(f"re-exporting: {check.reason}", file=sys.stderr)
        manifest = export_clip(
            clip,
            out,
            options,
            weights_sha256=weights,
            source={"model": args.model, "pretrained": args.pretrained},
        )
        done = "exported"
    assert manifest is not None
    for info in manifest["graphs"].values():
        shapes = {k: v["shape"] for k, v in {**info["inputs"], **info["outputs"]}.items()}
        print(f"  {info['file']:<18} {info['bytes'] / 2**20:8.1f} MiB  {shapes}")
    print(
        f"{done}: {args.model} ({manifest['dtype']}, opset {manifest['opset']}, "
        f"{'static' if manifest['static'] else 'dynamic batch'}) in {out}, "
        f"{time.perf_counter() - start:.1f} s; weights sha256 {weights[:16]}..., key {manifest['key']}"
    )
    if args.check:
        diffs = parity(clip, out)
        tol = TOLERANCE[manifest["dtype"]]
        bad = {k: v for k, v in diffs.items() if not v <= tol}
        for part, diff in diffs.items():
            print(f"  parity {part}: max |onnx - torch| = {diff:.3g} (tolerance {tol:g})")
        if bad:
            print(f"error: parity check failed for {', '.join(bad)}", file=sys.stderr)
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``grefine export-onnx`` with ``argv`` (the arguments after ``export-onnx``).

    :returns: the exit code (errors are printed, not raised).
    """
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv[:1] == ["--"]:  # `grefine export-onnx -- --model ...`
            argv = argv[1:]
        args = build_parser().parse_args(argv)
        return run(args)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except GRefineError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
