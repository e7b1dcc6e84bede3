"""``grefine weights [fetch]``: the weights a configuration needs, and fetching them.

Named ``weights`` (a noun, like ``grefine plugins`` and ``grefine presets``) because it answers
"which weights, where, present?"; ``fetch`` is its one action. It takes the configuration options
of ``grefine refine`` (preset, config file, ``--set``, ``--select``, the device, the settings
flags), so the list is the one of the run you will start. Exit status: 0 when every required
weight is present (after ``fetch``: was fetched), 2 when one is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from grefine_core.errors import MissingWeightsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The action and the output options of ``grefine weights``; the CLI adds the configuration
    options it shares with ``refine``."""
    p.add_argument(
        "action", nargs="?", choices=["list", "fetch"], default="list", help="default: list"
    )
    p.add_argument(
        "--mode",
        choices=["refine", "assess"],
        default="refine",
        help="the weights of a refine (default) or of an assess (no refiners)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _state(w: Any) -> str:
    if not w.present:
        return "optional, absent" if w.optional else "MISSING"
    return {True: "present, sha256 ok", False: "sha256 MISMATCH"}.get(w.verified, "present")


def format_table(weights: list[Any]) -> str:
    """One block per weight: state, size, licence, where it is looked for, how to get it."""
    if not weights:
        return "this configuration loads no weight files (random or planted weights)"
    lines = []
    for w in weights:
        lines.append(f"{w.name}  [{_state(w)}]  (plugin {w.plugin})")
        if w.size or w.licence:
            lines.append(f"    size: {w.size or '?'}   licence: {w.licence or '?'}")
        lines.append(f"    looked for in: {w.where}")
        if not w.present or w.verified is False:
            lines.append(f"    get it: {w.fetch_hint()}")
    return "\n".join(lines)


def run(args: argparse.Namespace, config: Any) -> int:
    """List (or fetch) the weights of ``config``, on the device it resolves to."""
    from grefine_core.app.weights import (
        check_device,
        collect_weights,
        fetch_missing,
        missing,
        missing_message,
        resolved,
    )
    from grefine_core.pipeline import GRefine

    check_device(config.device)
    pipeline = GRefine(config)
    config = resolved(config)  # a GPU run loads more (SDXL's float16 VAE)
    weights = collect_weights(pipeline, config, args.mode)
    failures: list[str] = []
    if args.action == "fetch":
        failures = fetch_missing(weights, say=lambda text: print(text, file=sys.stderr))
        weights = collect_weights(pipeline, config, args.mode)
    absent = missing(weights)
    if args.json:
        print(json.dumps([w.to_dict() for w in weights], indent=2))
    else:
        print(format_table(weights))
    if failures:
        raise MissingWeightsError("; ".join(failures))
    if absent:
        with_same = "`grefine weights fetch` with the same options"
        raise MissingWeightsError(missing_message(absent, config.preset, with_same))
    return 0
