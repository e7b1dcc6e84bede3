"""The ``grefine train-pq`` and ``grefine calibrate`` commands: arguments, the configuration
(``--preset``, ``--config``, ``--set``, ``--device``) and the summary printed at the end.

Exit codes: 0 done, 2 bad usage or input (a missing image file, a non-number MOS, an empty split,
missing weights), 1 a failed run. Errors are one line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from grefine_core.errors import GRefineError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mos", required=True, metavar="FILE", help="the MOS table (CSV or TSV)")
    p.add_argument(
        "--images", required=True, metavar="DIR", help="the folder the image names are relative to"
    )
    p.add_argument(
        "--image-col", metavar="COL", help="the image column (AGIQA-3K: name; AIGIQA-20K: Image)"
    )
    p.add_argument(
        "--mos-col", metavar="COL", help="the MOS column (AGIQA-3K: mos_quality; AIGIQA-20K: MOS)"
    )
    p.add_argument(
        "--factor-col",
        action="append",
        default=[],
        metavar="FACTOR=COL",
        help="the MOS column of technical / rational / natural (default: a column of that name, "
        "or mos_<factor>, when present); repeatable",
    )
    p.add_argument("--prompt-col", metavar="COL", help="the prompt column (default: prompt)")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="the preset to start from (default: paper)")
    p.add_argument("--config", metavar="FILE", help="a user TOML config file")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting, e.g. plugins.clip.model=tiny; repeatable",
    )
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--dtype", help="auto (default: CLIP in float32), float32")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _factor_cols(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        factor, sep, column = item.partition("=")
        if not sep or not factor or not column:
            raise UsageError(f"--factor-col expects FACTOR=COLUMN, got {item!r}")
        out[factor.strip()] = column.strip()
    return out


def configuration(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """``(GRefineConfig, base)``: the configuration of ``--preset/--config/--set/--device``, and
    what a written preset records of it (``{"preset": name, "settings": file + overrides}``)."""
    from grefine_core.config import (
        deep_merge,
        dotted_to_nested,
        load_config,
        parse_scalar,
        read_config_file,
    )

    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        overrides = deep_merge(overrides, dotted_to_nested(key, parse_scalar(value)))
    for flag in ("device", "dtype"):
        if getattr(args, flag, None):
            overrides[flag] = getattr(args, flag)
    config = load_config(preset=args.preset, config_file=args.config, overrides=overrides)
    settings = deep_merge(read_config_file(args.config) if args.config else {}, overrides)
    for flag in ("device", "dtype", "preset"):
        settings.pop(flag, None)  # the machine's, not the preset's
    return config, {"preset": config.preset, "settings": settings}


def _pipeline(config: Any) -> tuple[Any, Any, str]:
    """``(GRefine, backbone, PQ compat)`` of the configuration: the indicators' backbone
    (``[plugins.backbone] name``, else ``clip``) and ``[plugins.pq] compat``."""
    from grefine_quality.runtime import backbone_for

    from grefine_core.pipeline import GRefine

    pipeline = GRefine(config)
    context = pipeline.run_context(config.seed, "training", "")
    return pipeline, backbone_for(context, "clip"), str(context.settings("pq").compat)


# ---------------------------------------------------------------------------- train-pq


def train_parser() -> argparse.ArgumentParser:
    """The arguments of ``grefine train-pq``."""
    p = _Parser(
        prog="grefine train-pq",
        description="Learn the four PQ-Map prompts (CoOp-style, only the context vectors) from "
        "MOS data on a frozen CLIP Surgery backbone; writes PQ-*.pth in the released layout, "
        "manifest.json (sha256, data, split, metrics, versions), val_scores.csv and preset.toml "
        "into --out (docs/training.md).",
    )
    _table_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="the output folder")
    p.add_argument(
        "--mos-range",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        help="scale MOS from LO..HI (default: each column's min..max)",
    )
    p.add_argument("--epochs", type=int, default=50, help="the most epochs (default 50)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    p.add_argument("--lr", type=float, default=0.002, help="Adam learning rate (default 0.002)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay (default 0)")
    p.add_argument(
        "--patience",
        type=int,
        default=10,
        help="stop after this many epochs without a better validation SRCC (default 10)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of rows held out for validation (default 0.2)",
    )
    p.add_argument("--seed", type=int, default=0, help="split, init and batch-order seed")
    p.add_argument(
        "--init",
        choices=("text", "released"),
        default="text",
        help="start from class texts (default) or from PQ files (--init-from)",
    )
    p.add_argument("--good-text", default="a good photo.", help="the 'good' class text")
    p.add_argument("--bad-text", default="a bad photo.", help="the 'bad' class text")
    p.add_argument(
        "--init-from",
        default="",
        metavar="DIR",
        help="the PQ files of --init released (default: $GREFINE_PQ_DIR, then "
        "~/.cache/grefine/pq_embeddings)",
    )
    p.add_argument(
        "--untrained-factors",
        choices=("overall", "init"),
        default="overall",
        help="factors without a MOS column: a copy of the trained overall prompt "
        "(default) or their initial prompt",
    )
    p.add_argument("--feature-batch", type=int, default=16, help="images per encoder forward")
    p.add_argument(
        "--cache",
        default="",
        metavar="FILE",
        help="the image-feature cache (default OUT/features.pt)",
    )
    p.add_argument(
        "--stop-after",
        type=int,
        metavar="N",
        help="stop after N epochs of this invocation; rerun to continue",
    )
    p.add_argument("--restart", action="store_true", help="ignore a checkpoint in --out")
    _config_args(p)
    return p


def run_train(args: argparse.Namespace) -> int:
    """Run ``grefine train-pq`` with parsed ``args``; prints the summary."""
    from grefine_training.data import read_mos_table, split_indices
    from grefine_training.train import TrainOptions, train_pq

    options = TrainOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        patience=args.patience,
        val_fraction=args.val_fraction,
        seed=args.seed,
        init=args.init,
        good_text=args.good_text,
        bad_text=args.bad_text,
        init_from=args.init_from,
        untrained=args.untrained_factors,
        feature_batch=args.feature_batch,
        mos_range=tuple(args.mos_range) if args.mos_range else None,
        cache_file=args.cache,
        stop_after=args.stop_after,
        restart=args.restart,
    )
    options.check()
    table = read_mos_table(
        args.mos,
        args.images,
        image_col=args.image_col,
        mos_col=args.mos_col,
        factor_cols=_factor_cols(args.factor_col),
        prompt_col=args.prompt_col,
    )
    split_indices(len(table), options.val_fraction, options.seed)  # an empty split: refused now
    config, base = configuration(args)
    _, backbone, compat = _pipeline(config)
    from grefine_training.train import check_trainable

    check_trainable(backbone)
    result = train_pq(
        backbone,
        table,
        args.out,
        options,
        compat=compat,
        image_settings=config.image,
        base=base,
    )
    first, best = result.initial, result.best
    trained = ", ".join(f"{f} ({c})" for f, c in result.trained.items())
    if not result.finished:
        print(
            f"stopped after epoch {result.epochs_run} of {options.epochs} (--stop-after); "
            f"validation SRCC {first['score']:.3f} at the start, {best['score']:.3f} at the best "
            f"epoch {result.best_epoch}; rerun the same command to continue"
        )
        return 0
    why = "stopped early" if result.stopped_early else "all epochs"
    print(
        f"trained {trained} on {table.layout.name} table {table.path.name}: validation SRCC "
        f"{first['score']:.3f} -> {best['score']:.3f} (p: {first['p']['srcc']:.3f} -> "
        f"{best['p']['srcc']:.3f}), best epoch {result.best_epoch} of {result.epochs_run} "
        f"({why}); wrote {', '.join(result.files)}, manifest.json, val_scores.csv, preset.toml "
        f"in {result.out}. Use: --set plugins.pq.prompts={result.out} (or --config "
        f"{result.out / 'preset.toml'})"
    )
    return 0


# ---------------------------------------------------------------------------- calibrate


def calibrate_parser() -> argparse.ArgumentParser:
    """The arguments of ``grefine calibrate``."""
    p = _Parser(
        prog="grefine calibrate",
        description="Fit a preset's thresholds on MOS data: hq_skip.p_bound from the MOS "
        "distribution, plugins.mask_paper.tau from region masks (--masks), plugins.aq.beta and "
        "hq_skip.a_bound when the table has an alignment MOS column; writes a preset TOML that "
        "extends the preset it ran with (docs/training.md).",
    )
    _table_args(p)
    p.add_argument(
        "--align-col",
        metavar="COL",
        help="the alignment MOS column (default: AGIQA-3K's mos_align)",
    )
    p.add_argument(
        "--masks", metavar="DIR", help="region masks <image stem>.png (white = to refine) for tau"
    )
    p.add_argument(
        "--hq-mos",
        default="20%",
        help="high quality for p: a share ('20%%', the default: the top 20%%) or a MOS value",
    )
    p.add_argument("--hq-align-mos", default="20%", help="the same for a (alignment MOS)")
    p.add_argument(
        "--out",
        default="calibrated.toml",
        metavar="FILE",
        help="the preset file to write (default calibrated.toml)",
    )
    p.add_argument("--force", action="store_true", help="overwrite --out whoever wrote it")
    _config_args(p)
    return p


def run_calibrate(args: argparse.Namespace) -> int:
    """Run ``grefine calibrate`` with parsed ``args``; prints what was fitted."""
    import time

    from grefine_training.calibrate import MARKER, calibrate, write_calibration
    from grefine_training.data import read_mos_table

    table = read_mos_table(
        args.mos,
        args.images,
        image_col=args.image_col,
        mos_col=args.mos_col,
        factor_cols=_factor_cols(args.factor_col),
        align_col=args.align_col,
        prompt_col=args.prompt_col,
    )
    config, base = configuration(args)
    pipeline, backbone, _ = _pipeline(config)
    result = calibrate(
        pipeline, table, masks=args.masks, hq_mos=args.hq_mos, hq_align_mos=args.hq_align_mos
    )
    out = Path(args.out).expanduser()
    when = time.strftime("%Y-%m-%d", time.gmtime())
    header = [
        f"{MARKER.removeprefix('# ')} thresholds fitted on {len(table)} images of "
        f"{table.path.resolve()} (sha256 {table.sha256[:16]}..., {table.layout.name} layout), "
        f"images {table.images.resolve()}"
        + (f", masks {Path(args.masks).resolve()}" if args.masks else ""),
        f"with preset {base['preset']!r} on backbone {backbone.description!r}, {when}",
    ]
    write_calibration(out, result, base=base, header=header, force=args.force)
    fitted = ", ".join(f"{k} = {v:g}" for k, v in result.values.items())
    print(f"fitted {fitted} on {len(table)} images; wrote {out} (use it with --config {out})")
    for line in result.notes:
        print(f"  {line}")
    for line in result.not_fitted:
        print(f"  not fitted: {line}")
    return 0


# ---------------------------------------------------------------------------- entry


def _main(argv: Sequence[str] | None, parser: Callable[[], Any], run: Callable[[Any], int]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    debug = "--debug" in argv
    try:
        args = parser().parse_args(argv)
        return int(run(args) or 0)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except GRefineError as e:
        if debug:
            raise
        message = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"error: {message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted (train-pq resumes from its checkpoint when rerun)", file=sys.stderr)
        return 130


def train_main(argv: Sequence[str] | None = None) -> int:
    """``grefine train-pq ARGS``: the exit code (errors are printed, not raised)."""
    return _main(argv, train_parser, run_train)


def calibrate_main(argv: Sequence[str] | None = None) -> int:
    """``grefine calibrate ARGS``: the exit code (errors are printed, not raised)."""
    return _main(argv, calibrate_parser, run_calibrate)
