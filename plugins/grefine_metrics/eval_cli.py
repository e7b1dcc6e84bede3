"""``grefine eval``: the command-line front of the evaluation library.

The core CLI delegates ``grefine eval ...`` here with the arguments after ``eval``::

    grefine eval refine --images DIR_OR_MANIFEST --presets paper,reference[,abl.toml] \\
        [--metrics psnr_outside,ssim_outside,...|offline|all] --out DIR
    grefine eval assess --csv MOS.csv [--images-dir DIR] --out DIR [--scores pq,aq] [--metrics ...]
    grefine eval metrics [--json]

:func:`main` takes injectable ``run_method``, ``score_fn`` and ``registry`` so that tests (and
other front ends) can run it without the diffusion pipeline.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from grefine_core.errors import GRefineError, UsageError
from grefine_metrics.registry import Metric, MetricRegistry

log = logging.getLogger(__name__)


def load_registry(config_file: str | None = None) -> MetricRegistry:
    """Every metric registered by the installed plugins (``grefine_metrics`` hook).

    :param config_file: a TOML file whose ``[plugins.metrics]`` table sets the built-in metrics'
        options (``GREFINE_PLUGINS__METRICS__*`` environment variables work too).
    """
    from grefine_core.config import load_config
    from grefine_core.plugins import PluginHost

    config = load_config(config_file=config_file)
    return MetricRegistry.from_hook(PluginHost().hook, config)


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def resolve_metric_names(text: str | None, registry: MetricRegistry) -> list[Metric]:
    """``offline`` (default), ``all`` or a comma-separated list (may mix ``offline`` with names)."""
    from grefine_metrics.catalog import OFFLINE_METRICS

    names: list[str] = []
    for token in _split(text) or ["offline"]:
        if token == "all":
            names += registry.names()
        elif token == "offline":
            names += [n for n in OFFLINE_METRICS if n in registry]
        else:
            names.append(token)
    return registry.select(names)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="grefine eval", description="Evaluate refiners and quality indicators."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{refine,assess,metrics}")

    r = sub.add_parser("refine", help="run presets/ablations over images and measure before/after")
    r.add_argument(
        "--images",
        required=True,
        help="a folder of images, or a .csv/.jsonl manifest of image,prompt",
    )
    r.add_argument(
        "--presets",
        "--methods",
        dest="presets",
        default="paper",
        help="comma-separated preset names and/or TOML config files (default: paper)",
    )
    r.add_argument(
        "--metrics",
        default="offline",
        help="comma-separated metric names, 'offline' (default) or 'all'; see 'grefine eval metrics'",
    )
    r.add_argument(
        "--out", required=True, help="output folder (re-running with the same folder resumes)"
    )
    r.add_argument("--device", choices=["cpu", "cuda"], help="override the methods' device")
    r.add_argument("--limit", type=int, help="only the first N images")
    r.add_argument(
        "--contact-sheets",
        type=int,
        default=50,
        metavar="N",
        help="write contact sheets for the first N images (default 50; 0: none)",
    )
    r.add_argument("--no-plots", action="store_true", help="write neither plots nor contact sheets")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--config", help="TOML file whose [plugins.metrics] table sets metric options")

    a = sub.add_parser("assess", help="correlate PQ/AQ scores (and metrics) with MOS labels")
    a.add_argument(
        "--csv", required=True, help="MOS file (AGIQA-3K data.csv, AIGIQA-20K table as CSV, ...)"
    )
    a.add_argument("--images-dir", help="folder of the images (default: the CSV's folder)")
    a.add_argument("--out", required=True, help="output folder (re-running resumes)")
    a.add_argument(
        "--scores", default="pq,aq", help="indicator scores: pq, aq, or 'none' (default: pq,aq)"
    )
    a.add_argument(
        "--metrics",
        default="",
        help="no-reference metrics to correlate as well (e.g. brisque,niqe)",
    )
    a.add_argument(
        "--preset",
        default="paper",
        help="preset or TOML choosing the PQ/AQ indicators (default: paper)",
    )
    a.add_argument(
        "--layout", default="auto", choices=["auto", "agiqa3k", "aigiqa20k"], help="column layout"
    )
    a.add_argument("--image-column", help="column with the image file names")
    a.add_argument("--prompt-column", help="column with the prompts")
    a.add_argument("--mos-columns", help="comma-separated MOS columns")
    a.add_argument(
        "--logistic", action="store_true", help="also report PLCC after a 4-parameter logistic fit"
    )
    a.add_argument("--limit", type=int, help="only the first N rows")
    a.add_argument(
        "--skip-missing", action="store_true", help="leave out listed images that do not exist"
    )
    a.add_argument("--device", choices=["cpu", "cuda"], help="override the indicators' device")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.add_argument("--config", help="TOML file whose [plugins.metrics] table sets metric options")

    m = sub.add_parser("metrics", help="list the metrics and whether they can run here")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.add_argument("--config", help="TOML file whose [plugins.metrics] table sets metric options")
    return p


def _cmd_refine(
    args: argparse.Namespace, registry: MetricRegistry, run_method: Any, out: IO[str]
) -> int:
    from grefine_metrics.evaluate import evaluate_refine, method_labels
    from grefine_metrics.manifest import read_manifest

    metrics = resolve_metric_names(args.metrics, registry)
    methods = _split(args.presets)
    method_labels(methods)  # fail on bad/duplicate names before any work
    items = read_manifest(args.images)
    if args.limit is not None:
        items = items[: max(0, args.limit)]
    if run_method is None:
        from grefine_metrics.runner import GRefineRunner

        run_method = GRefineRunner(device=args.device)
    result = evaluate_refine(
        items,
        methods,
        metrics,
        args.out,
        run_method,
        progress=not args.quiet,
        plots=not args.no_plots,
        contact_limit=args.contact_sheets,
    )
    out.write(result.table_path.read_text("utf-8"))
    out.write(
        f"\nwrote {result.csv_path}, {result.table_path}, {result.summary_path}"
        + (
            f", {len(result.plot_paths)} plots, {len(result.contact_paths)} contact sheets"
            if not args.no_plots
            else ""
        )
        + f" ({result.computed} runs computed, {result.reused} reused)\n"
    )
    return 0


def _cmd_assess(
    args: argparse.Namespace, registry: MetricRegistry, score_fn: Any, out: IO[str]
) -> int:
    from grefine_metrics.assess import evaluate_assess
    from grefine_metrics.evaluate import load_rgb

    scores = [s for s in _split(args.scores) if s != "none"]
    unknown = [s for s in scores if s not in ("pq", "aq")]
    if unknown:
        raise UsageError(f"unknown score(s) {unknown} in --scores; valid: pq, aq, none")
    metrics = registry.select(_split(args.metrics)) if args.metrics else []
    full_ref = [m.name for m in metrics if "reference" in m.needs]
    if full_ref:
        raise UsageError(
            f"--metrics {full_ref} compare with an original image; assess needs no-reference metrics"
        )
    ready = []
    for m in metrics:
        ok, why = m.available()
        if ok:
            ready.append(m)
        else:
            log.warning("metric %r skipped: %s", m.name, why)
            out.write(f"metric {m.name!r} skipped: {why}\n")
    if not scores and not ready:
        raise UsageError(
            "nothing to assess: give --scores pq,aq and/or --metrics with an available metric"
        )
    indicator = score_fn
    if scores and indicator is None:
        from grefine_metrics.runner import GRefineScorer

        indicator = GRefineScorer(args.preset, device=args.device)

    def combined(path: Path, prompt: str) -> dict[str, float]:
        values: dict[str, float] = {}
        if scores:
            got = indicator(path, prompt)
            values.update({k: float(got.get(k, math.nan)) for k in scores})
        if ready:
            image = load_rgb(path, "image")
            for m in ready:
                values[m.name] = m(image, image, None, prompt)
        return values

    result = evaluate_assess(
        args.csv,
        combined,
        out_dir=args.out,
        images_dir=args.images_dir,
        layout=args.layout,
        image_column=args.image_column,
        prompt_column=args.prompt_column,
        mos_columns=_split(args.mos_columns) or None,
        limit=args.limit,
        logistic=args.logistic,
        skip_missing=args.skip_missing,
        progress=not args.quiet,
        required=[*scores, *(m.name for m in ready)],
    )
    out.write((Path(args.out) / "table.md").read_text("utf-8"))
    out.write(f"\nwrote {', '.join(str(f) for f in result.files)}\n")
    return 0


def _cmd_metrics(args: argparse.Namespace, registry: MetricRegistry, out: IO[str]) -> int:
    rows = []
    for m in registry:
        ok, why = m.available()
        rows.append(
            {
                "name": m.name,
                "label": m.header,
                "group": m.group,
                "available": ok,
                "reason": why,
                "needs": sorted(m.needs),
                "higher_is_better": m.higher_is_better,
                "description": m.description,
            }
        )
    if args.json:
        out.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        state = "ok" if r["available"] else "unavailable"
        out.write(f"{r['name']:<{width}}  {r['group']:<10}  {state:<11}  {r['description']}\n")
        if not r["available"]:
            out.write(f"{'':<{width}}  -> {r['reason']}\n")
    return 0


def main(
    argv: Sequence[str] | None = None,
    *,
    run_method: Any = None,
    score_fn: Any = None,
    registry: MetricRegistry | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Run ``grefine eval`` with ``argv`` (the arguments after ``eval``); returns the exit code.

    :param run_method: replaces :class:`~grefine_metrics.runner.GRefineRunner` (tests, front ends).
    :param score_fn: replaces :class:`~grefine_metrics.runner.GRefineScorer` for ``--scores``.
    :param registry: the metrics (default: collected from the installed plugins).
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # --help (0) or a usage error (2)
        return int(e.code or 0)
    try:
        reg = registry if registry is not None else load_registry(args.config)
        if args.command == "refine":
            return _cmd_refine(args, reg, run_method, out)
        if args.command == "assess":
            return _cmd_assess(args, reg, score_fn, out)
        return _cmd_metrics(args, reg, out)
    except GRefineError as e:
        err.write(f"grefine eval {args.command}: error: {e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        err.write(f"grefine eval {args.command}: interrupted; re-run the same command to resume\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
