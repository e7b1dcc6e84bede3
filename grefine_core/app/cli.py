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


def _device(text: str) -> str:
    import re

    from grefine_core.placement import DEVICE_PATTERN

    if not re.match(DEVICE_PATTERN, text):
        raise argparse.ArgumentTypeError(
            f"invalid device {text!r}; valid: auto, cpu, mps, cuda, cuda:N (N = 0, 1, ...)"
        )
    return text


def _flags() -> list[Any]:
    """The settings flags plugins declare (read once per process)."""
    global _FLAGS
    if _FLAGS is None:
        from grefine_core.app.flags import setting_flags

        _FLAGS = setting_flags()
    return _FLAGS


_FLAGS: list[Any] | None = None


def _preset_list() -> str:
    from grefine_core.config import preset_names

    return ", ".join(preset_names())


def _config_options(p: argparse.ArgumentParser) -> None:
    """The options that build the configuration (``refine``, ``assess``, ``weights``)."""
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
    select_help = f"plugin for a slot ({', '.join(SLOTS)}); PLUGIN 'none' skips the slot"
    _select_and_set(p, select_help, "plugins.sdxl.steps=4")
    p.add_argument(
        "--disable",
        action="append",
        default=[],
        metavar="PLUGIN",
        help="block a plugin before import; its slot is skipped (ablation); repeatable",
    )
    p.add_argument("--seed", type=int, metavar="N", help="base seed (item i of a batch uses N + i)")
    p.add_argument(
        "--device",
        type=_device,
        metavar="DEVICE",
        help="auto (default: CUDA, then MPS, then the CPU), cpu, mps, cuda or cuda:N",
    )
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "float16", "bfloat16"],
        help="model dtype (default auto: float16 on CUDA, float32 elsewhere)",
    )
    from grefine_core.app.flags import add_setting_flags

    add_setting_flags(p, _flags())


def _common_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder (created if needed; never an input's own file), or a pyarrow "
        "filesystem URI (s3://bucket/prefix, gs://..., file://...; docs/scale-out.md)",
    )
    _config_options(p)
    p.add_argument(
        "--maps",
        choices=["png", "all", "none"],
        help="DIR/<stem>_maps/: png (default: overlay PNGs, overview.png, maps.npz), all (also "
        "every map as .npy), none (no maps folder)",
    )
    p.add_argument(
        "--fetch-weights",
        action="store_true",
        help="download missing weights before the first item (default: name them all and stop; "
        "see grefine weights)",
    )
    p.add_argument(
        "--prompt-from-metadata",
        action="store_true",
        help="take each image's prompt from its A1111 'parameters' or ComfyUI 'prompt' text "
        "chunk (a folder given as IMAGE does this by itself, with <stem>.txt sidecars too)",
    )
    p.add_argument(
        "--strip-metadata",
        action="store_true",
        help="write no text chunks into output images (by default they keep the input's and "
        "add grefine's own A1111-style 'parameters' and the JSON report)",
    )
    p.add_argument(
        "--no-maps",
        action="store_true",
        help="write only the image and the JSON, no DIR/<stem>_maps/",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="recompute every item (default: skip an item only when its DIR/<stem>.json holds "
        "the same run fingerprint: input sha256, prompt, seed, mode, preset, every setting, "
        "plugins, versions, models; and every file it vouches for matches its sha256)",
    )
    e = p.add_argument_group("engine (docs/scale-out.md)")
    e.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local (default: this process, models loaded once) or ray (a Ray Data pipeline, "
        "one actor pool per model group; pip install 'grefine[ray]')",
    )
    e.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="auto (the cluster this machine is in), HOST:PORT or ray://HOST:PORT (default: "
        "start Ray on this machine for the batch)",
    )
    e.add_argument(
        "--ray-pool",
        action="append",
        default=[],
        metavar="PART=SIZE[:GPUS[:CPUS[:BATCH]]]",
        help="actors of one part (start, stage1, stage2), e.g. stage1=2:1 for two actors with "
        "a GPU each (default 1 actor, 0 GPUs, 0.5 CPUs, 1 item per call); repeatable",
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
        "(scores, defects, trace) and DIR/<stem>_maps/ (map overlay and mask PNGs, overview.png\n"
        "with colour bars, every map in maps.npz; see docs/outputs.md).",
        epilog=RUN_EPILOG,
        formatter_class=formatter,
    )
    r.add_argument(
        "images",
        nargs="*",
        metavar="IMAGE",
        help="input images (any PIL-readable file and mode), or a folder of them (prompts from "
        "<stem>.txt sidecars or the images' metadata, unless --prompt is given)",
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
    a.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="input images, or a folder of them (prompts from <stem>.txt sidecars or metadata)",
    )
    a.add_argument(
        "--prompt",
        metavar="TEXT",
        help="the images' prompt (required unless --prompt-from-metadata or a folder is given)",
    )
    _common_run_options(a)

    pa = sub.add_parser("parse", help="show how a prompt is split into phrases")
    pa.add_argument("text", metavar="TEXT")
    pa.add_argument(
        "--parser", metavar="NAME", default=None, help="parser plugin (default: the preset's)"
    )
    pa.add_argument("--preset", metavar="NAME", help="preset to take the parser from")
    pa.add_argument("--config", metavar="FILE", help="a TOML config file (the parser's settings)")
    _select_and_set(pa, "only parser=NAME matters here (as --parser)", "plugins.nltk.tagger=auto")
    pa.add_argument("--json", action="store_true", help="machine-readable output")
    pa.set_defaults(disable=[])
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

    w = sub.add_parser(
        "weights",
        help="list the weights a preset needs (present? where? how to get?); fetch them",
        description="List every weight the configuration's plugins load, where each is looked "
        "for, whether it is present (sha256-checked where the publisher gives one), its size and "
        "licence, and how to get it; 'fetch' downloads the missing ones into the standard caches "
        "(resumable). Exit status 2 when a required weight is missing.",
    )
    from grefine_core.app.weights_cmd import add_arguments

    add_arguments(w)
    _config_options(w)
    _global_options(w, top=False)

    sv = sub.add_parser(
        "serve",
        help="a web page: upload, see the maps, move tau, refine, download (docs/ui.md)",
        description="Start the grefine web page (Gradio) on this machine; models load once. "
        "Needs the ui extra: pip install 'grefine[ui]'.",
    )
    sv.add_argument("--preset", default="paper", metavar="NAME", help="the preset first shown")
    sv.add_argument(
        "--host", default="127.0.0.1", help="interface (default 127.0.0.1: this machine only)"
    )
    sv.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    _global_options(sv, top=False)

    pr = sub.add_parser("presets", help="list presets or show one")
    pr.add_argument("name", nargs="?", metavar="NAME", help="print this preset's TOML")
    _global_options(pr, top=False)

    # Listed for --help; their arguments are parsed by the plugin that adds them.
    for name, (text, _) in plugin_commands().items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


BUILTIN_COMMANDS = ("refine", "assess", "parse", "plugins", "presets", "weights", "serve")
#: Hooks besides the slots that ``grefine plugins`` lists as what a plugin provides: commands,
#: backbones and any hook a plugin added itself (``grefine_add_hookspecs``).
COMMANDS = "grefine_register_commands"
BACKBONES = "grefine_backbones"


def plugin_commands() -> dict[str, tuple[str, Any]]:
    """``{name: (help, main)}`` from every installed plugin's ``grefine_register_commands``."""
    from grefine_core.plugins import PluginHost

    host = PluginHost()
    commands: dict[str, tuple[str, Any]] = {}
    owners: dict[str, str] = {}
    for impl in host.pm.hook.grefine_register_commands.get_hookimpls():
        for name, (text, main_fn) in (impl.function() or {}).items():
            clash = "the built-in command" if name in BUILTIN_COMMANDS else owners.get(name)
            if clash:
                raise UsageError(
                    f"plugin {impl.plugin_name!r} adds the command {name!r}, which "
                    f"{clash if clash.startswith('the') else f'plugin {clash!r}'} already has"
                )
            commands[name], owners[name] = (text, main_fn), impl.plugin_name
    return commands


def _delegated_command(argv: list[str]) -> tuple[Any, list[str]] | None:
    """``(main, rest)`` when the first non-option word is a command a plugin adds."""
    for i, word in enumerate(argv):
        if not word.startswith("-"):
            if word in BUILTIN_COMMANDS:
                return None
            found = plugin_commands().get(word)
            return (found[1], argv[i + 1 :]) if found else None
    return None


# ---------------------------------------------------------------------------- config from flags


def _select_and_set(p: argparse.ArgumentParser, select_help: str, set_example: str) -> None:
    """The repeatable ``--select SLOT=PLUGIN`` and ``--set KEY=VALUE`` options."""
    p.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="SLOT=PLUGIN",
        help=f"{select_help}; repeatable",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"any config key, dotted, e.g. {set_example}; repeatable",
    )


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
    if getattr(args, "seed", None) is not None:
        from grefine_core.pipeline import check_seed

        try:
            check_seed(args.seed)
        except UsageError as e:
            raise UsageError(f"--seed: {e}") from None
    for flag in ("seed", "device", "dtype"):
        if getattr(args, flag, None) is not None:
            out[flag] = getattr(args, flag)
    from grefine_core.app.flags import flag_overrides

    for layer in flag_overrides(args, _flags()):
        out = deep_merge(out, layer)
    if getattr(args, "maps", None):
        out = deep_merge(out, {"output": {"maps": args.maps}})
    if getattr(args, "no_maps", False):
        out = deep_merge(out, {"output": {"maps": "none"}})
    if getattr(args, "strip_metadata", False):
        out = deep_merge(out, {"output": {"strip_metadata": True}})
    return out


def _config(args: argparse.Namespace):
    from grefine_core.config import load_config

    return load_config(preset=args.preset, config_file=args.config, overrides=_overrides(args))


# ---------------------------------------------------------------------------- commands


def _items(args: argparse.Namespace):
    from grefine_core.app.inputs import expand_inputs, fill_prompts
    from grefine_core.app.manifest import read_manifest

    from_metadata = getattr(args, "prompt_from_metadata", False)
    if from_metadata and getattr(args, "prompt", None) is not None:
        raise UsageError("give either --prompt or --prompt-from-metadata, not both")
    if getattr(args, "prompt_file", None):
        if args.images:
            raise UsageError(
                "give images either as arguments with --prompt or in --prompt-file, not both"
            )
        items = read_manifest(args.prompt_file, allow_empty_prompts=from_metadata)
        return fill_prompts(items, from_metadata=from_metadata, sidecars=False)
    if not args.images:
        raise UsageError("no images given: pass IMAGE... with --prompt, or --prompt-file")
    if args.prompt is not None and not args.prompt.strip():
        raise InputError("--prompt is empty: give the prompt the image was generated from")
    folders = [i for i in args.images if Path(i).is_dir()]
    if args.prompt is None and not from_metadata and not folders:
        raise UsageError(
            "--prompt is required when images are given as arguments (or use --prompt-file, "
            "--prompt-from-metadata, or give a folder with <stem>.txt sidecars)"
        )
    items = expand_inputs(args.images, args.prompt or "")  # checks every path (check_image_path)
    if args.prompt is not None:
        return items
    return fill_prompts(items, from_metadata=True, sidecars=True)


def _check_config_seed(seed: int) -> None:
    from grefine_core.pipeline import check_seed

    try:
        check_seed(seed)
    except UsageError as e:
        raise UsageError(f"seed = {seed} (from --set, --config or GREFINE_SEED): {e}") from None


def cmd_run(args: argparse.Namespace, mode: str) -> int:
    from grefine_core.app.progress import BatchProgress, StageProgressObserver, logging_above_bars
    from grefine_core.app.weights import preflight
    from grefine_core.pipeline import GRefine

    items = _items(args)
    engine = _engine_options(args)
    cfg = _config(args)
    _check_config_seed(cfg.seed)
    observer = StageProgressObserver(enabled=not args.quiet)
    pipeline = GRefine(cfg, observers=[observer])
    if engine is not None:  # the actors' device, not this machine's, for weights and fingerprints
        from grefine_core.app.engine_ray import pinned_pipeline

        pipeline = pinned_pipeline(pipeline, engine, mode)
    say = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    preflight(pipeline, fetch=args.fetch_weights, say=say, mode=mode)
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
                engine=args.engine,
                ray=engine,
            )
    finally:
        progress.close()
    counts = report.counts()
    for outcome in report.outcomes:
        if outcome.status == "failed":
            print(f"FAILED {outcome.item.image}: {one_line(outcome.error)}", file=sys.stderr)
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


def _engine_options(args: argparse.Namespace) -> Any:
    """The Ray engine's options, checked before anything loads (``None`` for local)."""
    if args.engine != "ray":
        if args.ray_address or args.ray_pool:
            raise UsageError("--ray-address and --ray-pool need --engine ray")
        return None
    from grefine_core.app.engine_ray import RayOptions, check_reachable, parse_pool, require_ray

    require_ray()
    if not args.debug:
        logging.getLogger("ray").setLevel(logging.WARNING)  # Ray Data's INFO lines per dataset
    if args.ray_address:
        check_reachable(args.ray_address)
    return RayOptions(address=args.ray_address, pools=dict(map(parse_pool, args.ray_pool)))


def cmd_parse(args: argparse.Namespace) -> int:
    from grefine_core.config import load_config
    from grefine_core.pipeline import GRefine

    overrides = _overrides(args)
    cfg0 = load_config(preset=args.preset, config_file=args.config, overrides=overrides)
    parser_name = args.parser or cfg0.select.get("parser")
    if not parser_name:
        raise UsageError(f"preset {cfg0.preset!r} selects no parser; pass --parser NAME")
    overrides["select"] = {**{s: "none" for s in SLOTS}, "parser": parser_name}
    cfg = load_config(preset=args.preset, config_file=args.config, overrides=overrides)
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
        from grefine_core.app.display import format_parsed

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
    from grefine_core import hookspecs

    kernel_hooks = {n for n in vars(hookspecs) if n.startswith("grefine_")}
    for i in infos:
        listed = (COMMANDS, BACKBONES)
        extras = [_provided(h) for h in i.hooks if h in listed or h not in kernel_hooks]
        slots = ",".join(i.slots) or ",".join(extras) or "-"
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


def _provided(hook: str) -> str:
    """How ``grefine plugins`` names what a non-slot hook provides."""
    return "commands" if hook == COMMANDS else hook.removeprefix("grefine_")


def cmd_delegate(main_fn: Any, rest: list[str]) -> int:
    return int(main_fn(rest) or 0)


def one_line(message: str | None) -> str:
    """A message on one line: its lines joined with "; " (the CLI never prints a block)."""
    lines = [line.strip() for line in str(message or "").splitlines() if line.strip()]
    out = ""
    for line in lines:
        out += line if not out else (" " if out.endswith(":") else "; ") + line
    return out


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
        if args.command == "serve":
            from grefine_core.app.webui import serve
            from grefine_core.config import preset_names

            if args.preset not in preset_names():
                known = ", ".join(preset_names())
                raise UsageError(f"--preset {args.preset!r}: unknown preset; known: {known}")
            serve(args.preset, args.host, args.port)
            return 0
        if args.command == "weights":
            from grefine_core.app.weights_cmd import run

            return run(args, _config(args))
        raise UsageError(f"unknown command {args.command!r}")
    except GRefineError as e:
        if debug:
            raise
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not a user error: still no traceback without --debug
        if debug:
            raise
        print(
            f"error: unexpected {type(e).__name__}: {one_line(str(e))} (run with --debug for the "
            "traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
