"""The ``grefine`` command line.

Exit codes: 0 success, 2 bad usage or input, 1 a failed run. Errors are one clear message; add
``--debug`` for the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grefine_core.errors import GRefineError, InputError, UsageError
from grefine_core.types import SLOTS

log = logging.getLogger("grefine")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of exiting, so one handler prints errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _global_options(p: argparse.ArgumentParser, top: bool) -> None:
    """``--debug`` and ``-q``, accepted before and after the subcommand."""
    default = False if top else argparse.SUPPRESS  # a subcommand must not reset the top's value
    p.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks and debug logs"
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="only errors, no progress bars"
    )


def _preset_list() -> str:
    from grefine_core.config import preset_names

    return ", ".join(preset_names())


def _common_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder (created if needed); never an input's own file",
    )
    p.add_argument(
        "--preset",
        metavar="NAME",
        help=f"shipped preset: {_preset_list()} (default: GREFINE_PRESET, the config file's, else paper)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML config file; overrides the preset, overridden by GREFINE_* and flags",
    )
    p.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="SLOT=PLUGIN",
        help=f"plugin for a slot ({', '.join(SLOTS)}); PLUGIN 'none' skips the slot; repeatable",
    )
    p.add_argument(
        "--disable",
        action="append",
        default=[],
        metavar="PLUGIN",
        help="block a plugin before import; its slot is skipped (ablation); repeatable",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key, dotted, e.g. plugins.sdxl.steps=4; repeatable",
    )
    p.add_argument("--seed", type=int, metavar="N", help="base seed (item i of a batch uses N + i)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="torch device")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="model dtype")
    p.add_argument(
        "--no-maps",
        action="store_true",
        help="write only the image and the JSON, no DIR/<stem>_maps/",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="recompute every item (default: skip items whose DIR/<stem>.json was written in "
        "this mode for the same prompt)",
    )
    _global_options(p, top=False)


RUN_EPILOG = """configuration precedence (lowest to highest): --preset, --config FILE, GREFINE_* environment
variables, the other flags. --disable adds to the plugins disabled by lower levels; --select
SLOT=PLUGIN re-enables a plugin that a lower level disabled.

exit status: 0 success, 2 bad usage or input, 1 a failed run (add --debug for tracebacks).
"""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="grefine", description="G-Refine: quality maps and refinement for AI-generated images."
    )
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    formatter = argparse.RawDescriptionHelpFormatter

    r = sub.add_parser(
        "refine",
        help="find defects and refine images",
        description="Assess and refine images. Writes DIR/<stem>.png (refined), DIR/<stem>.json\n"
        "(scores, defects, trace) and DIR/<stem>_maps/ (every map as .npy and overlay PNG).",
        epilog=RUN_EPILOG,
        formatter_class=formatter,
    )
    r.add_argument(
        "images", nargs="*", metavar="IMAGE", help="input images (any PIL-readable file and mode)"
    )
    g = r.add_mutually_exclusive_group()
    g.add_argument("--prompt", metavar="TEXT", help="the prompt the images were generated from")
    g.add_argument(
        "--prompt-file",
        metavar="F",
        help='batch: a CSV with columns image,prompt or a JSONL of {"image", "prompt"} '
        "(image paths relative to F); shows a progress bar",
    )
    _common_run_options(r)

    a = sub.add_parser(
        "assess",
        help="quality maps and scores only, no refinement",
        description="Quality maps and scores only (no refinement): DIR/<stem>.json and\n"
        "DIR/<stem>_maps/; DIR/<stem>.png is the input as the pipeline saw it (RGB).",
        epilog=RUN_EPILOG,
        formatter_class=formatter,
    )
    a.add_argument("images", nargs="+", metavar="IMAGE", help="input images")
    a.add_argument("--prompt", metavar="TEXT", required=True, help="the images' prompt")
    _common_run_options(a)

    pa = sub.add_parser("parse", help="show how a prompt is split into phrases")
    pa.add_argument("text", metavar="TEXT")
    pa.add_argument(
        "--parser", metavar="NAME", default=None, help="parser plugin (default: the preset's)"
    )
    pa.add_argument("--preset", metavar="NAME", help="preset to take the parser from")
    pa.add_argument("--json", action="store_true", help="machine-readable output")
    _global_options(pa, top=False)

    pl = sub.add_parser("plugins", help="list plugins, their slots and status")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.add_argument("--preset", metavar="NAME", help="show the status under this preset")
    pl.add_argument("--config", metavar="FILE", help="show the status under this config file")
    pl.add_argument(
        "--disable",
        action="append",
        default=[],
        metavar="PLUGIN",
        help="show PLUGIN as disabled (adds to the configuration's disable); repeatable",
    )
    _global_options(pl, top=False)

    pr = sub.add_parser("presets", help="list presets or show one")
    pr.add_argument("name", nargs="?", metavar="NAME", help="print this preset's TOML")
    _global_options(pr, top=False)

    # Listed for --help; their arguments are parsed by the plugin that owns them (see DELEGATED).
    for name, text in DELEGATED_HELP.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


#: Subcommands whose whole argument list is handed to a plugin module's ``main(argv)``.
DELEGATED = {"eval": "grefine_metrics.eval_cli", "export-onnx": "grefine_onnx.cli"}
DELEGATED_HELP = {
    "eval": "evaluate refinement or assessment (grefine eval --help)",
    "export-onnx": "export CLIP Surgery encoders to ONNX (grefine export-onnx --help)",
}


def _delegated_command(argv: list[str]) -> tuple[str, list[str]] | None:
    """``(module, rest)`` when the first non-option word is a delegated subcommand."""
    for i, word in enumerate(argv):
        if not word.startswith("-"):
            return (DELEGATED[word], argv[i + 1 :]) if word in DELEGATED else None
    return None


# ---------------------------------------------------------------------------- config from flags


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from grefine_core.config import deep_merge, dotted_to_nested, parse_scalar

    out: dict[str, Any] = {}
    select: dict[str, str] = {}
    for item in args.select:
        slot, sep, plugin = item.partition("=")
        if not sep or not slot or not plugin:
            raise UsageError(f"--select expects SLOT=PLUGIN, got {item!r}")
        if slot not in SLOTS:
            raise UsageError(
                f"--select {item!r}: unknown slot {slot!r}; valid slots: {', '.join(SLOTS)}"
            )
        select[slot] = plugin
    if select:
        out["select"] = select
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        out = deep_merge(out, dotted_to_nested(key, parse_scalar(value)))
    if args.disable:
        # One layer: --set disable=[...] and --disable add up.
        listed = out.get("disable", [])
        if not isinstance(listed, list):
            raise UsageError(f"--set disable expects a list such as ['pasd'], got {listed!r}")
        out["disable"] = list(dict.fromkeys([*listed, *args.disable]))
    for flag in ("seed", "device", "dtype"):
        if getattr(args, flag, None) is not None:
            out[flag] = getattr(args, flag)
    if getattr(args, "no_maps", False):
        out = deep_merge(out, {"output": {"save_maps": False}})
    return out


def _config(args: argparse.Namespace):
    from grefine_core.config import load_config

    return load_config(preset=args.preset, config_file=args.config, overrides=_overrides(args))


# ---------------------------------------------------------------------------- commands


def _items(args: argparse.Namespace):
    from grefine_core.manifest import read_manifest, unique_items

    if getattr(args, "prompt_file", None):
        if args.images:
            raise UsageError(
                "give images either as arguments with --prompt or in --prompt-file, not both"
            )
        return read_manifest(args.prompt_file)
    if not args.images:
        raise UsageError("no images given: pass IMAGE... with --prompt, or --prompt-file")
    if args.prompt is None:
        raise UsageError(
            "--prompt is required when images are given as arguments (or use --prompt-file)"
        )
    if not args.prompt.strip():
        raise InputError("--prompt is empty: give the prompt the image was generated from")
    for image in args.images:
        path = Path(image)
        if path.is_dir():
            raise InputError(f"image {image!r} is a directory, not an image file")
        if not path.exists():
            raise InputError(f"image {image!r} does not exist")
    return unique_items([(Path(i), args.prompt) for i in args.images])


def cmd_run(args: argparse.Namespace, mode: str) -> int:
    from grefine_core.pipeline import GRefine
    from grefine_core.progress import BatchProgress, StageProgressObserver, logging_above_bars

    items = _items(args)
    cfg = _config(args)
    observer = StageProgressObserver(enabled=not args.quiet)
    pipeline = GRefine(cfg, observers=[observer])
    if not args.quiet:
        for notice in pipeline.notices():
            print(f"NOTE (preset {cfg.preset!r}): {notice}", file=sys.stderr)
    progress = BatchProgress(len(items), enabled=not args.quiet and len(items) > 1)
    try:
        with logging_above_bars(enabled=not args.quiet):
            report = pipeline.refine_many(
                items,
                args.out,
                mode=mode,
                resume=not getattr(args, "no_resume", False),
                on_item=progress.update,
            )
    finally:
        progress.close()
    counts = report.counts()
    for outcome in report.outcomes:
        if outcome.status == "failed":
            print(f"FAILED {outcome.item.image}: {outcome.error}", file=sys.stderr)
        elif outcome.status == "done" and not args.quiet and outcome.result is None:
            print(
                f"{outcome.item.name}: wrote {outcome.paths.get('image')} and {outcome.paths.get('json')}"
            )
    if not args.quiet:
        print(
            f"{counts['done']} done, {counts['resumed']} already done (resumed), {counts['failed']} failed"
            f" -> {args.out}"
        )
    return report.exit_code


def cmd_parse(args: argparse.Namespace) -> int:
    from grefine_core.config import load_config
    from grefine_core.pipeline import GRefine

    overrides: dict[str, Any] = {"select": {s: "none" for s in SLOTS}}
    cfg0 = load_config(preset=args.preset)
    overrides["select"]["parser"] = args.parser or cfg0.select.get("parser", "nltk")
    cfg = load_config(preset=args.preset, overrides=overrides)
    pipeline = GRefine(cfg)
    parsed = pipeline.parse(args.text)
    if args.json:
        data = parsed.to_dict()
        tree = parsed.tree
        if tree is not None:  # one line, bracketed
            tree = tree.pformat(margin=1_000_000) if hasattr(tree, "pformat") else str(tree)
        data["tree"] = tree
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        from grefine_core.display import format_parsed

        print(format_parsed(parsed, syntax=True))
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from grefine_core.config import load_config
    from grefine_core.plugins import PluginHost

    overrides = {"disable": list(args.disable)} if args.disable else None
    cfg = load_config(preset=args.preset, config_file=args.config, overrides=overrides)
    host = PluginHost(disable=cfg.disable)
    infos = host.report()
    if args.json:
        print(json.dumps([i.to_dict() for i in infos], indent=2))
        return 0
    rows = [("plugin", "slots", "version", "source", "status")]
    for i in infos:
        slots = ",".join(i.slots) or ("metrics" if "grefine_metrics" in i.hooks else "-")
        status = i.status + (f" ({i.reason})" if i.reason and i.status != "loaded" else "")
        rows.append((i.name, slots, i.version or "-", i.source, status))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths)) + "  " + r[4])
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from importlib import resources

    from grefine_core.config import preset_data, preset_names

    if args.name:
        preset_data(args.name)  # validates the name
        print(
            (resources.files("grefine_core") / "presets" / f"{args.name}.toml").read_text("utf-8")
        )
        return 0
    for name in preset_names():
        print(f"{name:<10} {preset_data(name).get('description', '')}")
    return 0


def cmd_delegate(module: str, rest: list[str]) -> int:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise UsageError(f"this command needs {module} ({e})") from None
    return int(mod.main(rest) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``grefine`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    quiet = "-q" in argv or "--quiet" in argv
    logging.basicConfig(
        level=logging.DEBUG if debug else (logging.ERROR if quiet else logging.WARNING),
        format="%(levelname)s: %(message)s",
    )
    try:
        delegated = _delegated_command(argv)
        if delegated is not None:
            return cmd_delegate(*delegated)
        args = build_parser().parse_args(argv)
        if args.command == "refine":
            return cmd_run(args, "refine")
        if args.command == "assess":
            return cmd_run(args, "assess")
        if args.command == "parse":
            return cmd_parse(args)
        if args.command == "plugins":
            return cmd_plugins(args)
        if args.command == "presets":
            return cmd_presets(args)
        raise UsageError(f"unknown command {args.command!r}")
    except GRefineError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not a user error: still no traceback without --debug
        if debug:
            raise
        print(
            f"error: unexpected {type(e).__name__}: {e} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
