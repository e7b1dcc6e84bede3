"""``grefine weights [fetch]``: the weights a configuration needs, and fetching them.

Named ``weights`` (a noun, like ``grefine plugins`` and ``grefine presets``) because it answers
"which weights, where, present?"; ``fetch`` is its one action. Exit status: 0 when every required
weight is present (after ``fetch``: was fetched), 2 when one is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from grefine_core.errors import MissingWeightsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``grefine weights`` (shared by its ``fetch`` action)."""
    p.add_argument(
        "action", nargs="?", choices=["list", "fetch"], default="list", help="default: list"
    )
    p.add_argument("--preset", metavar="NAME", help="the preset whose weights to list")
    p.add_argument("--config", metavar="FILE", help="a TOML config file")
    p.add_argument("--select", action="append", default=[], metavar="SLOT=PLUGIN")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--disable", action="append", default=[], metavar="PLUGIN")
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
    """List (or fetch) the weights of ``config``."""
    from grefine_core.app.weights import collect_weights, missing, missing_message
    from grefine_core.pipeline import GRefine

    pipeline = GRefine(config)
    weights = collect_weights(pipeline)
    if args.action == "fetch":
        from grefine_core.app.weights_fetch import fetch

        for weight in (w for w in missing(weights) if w.fetchable):
            where = fetch(weight, say=lambda text: print(text, file=sys.stderr))
            print(f"{weight.name}: {where}", file=sys.stderr)
        weights = collect_weights(pipeline)
    absent = missing(weights)
    if args.json:
        print(json.dumps([w.to_dict() for w in weights], indent=2))
    else:
        print(format_table(weights))
    if absent:
        raise MissingWeightsError(missing_message(absent, config.preset))
    return 0
