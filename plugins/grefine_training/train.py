"""``grefine train-pq``: CoOp-style learning of the PQ-Map prompts on MOS data (docs/training.md).

What is learned is exactly what the PQ indicator computes at run time
(:class:`grefine_quality.pq.PerceptualQuality`): per factor, the prompt pair
``E = cat(prefix, ctx[:, :8], suffix[:, :3], ctx[:, 8:], suffix[:, 3:])`` (``[2, 77, W]``, the
class tokens at rows 9-11, the end-of-text at row 20) goes through the frozen text transformer
(``backbone.prompt_text``) to ``T [2, D]``; an image's score is ``softmax(F_cls @ T^T)[good]``
with ``F_cls`` its normalised CLIP Surgery class token (frozen, cached:
:mod:`grefine_training.features`). Only ``ctx`` ``[2, 16, W]`` is learned; prefix and suffix
stay as initialised.

Loss: the soft-label binary cross-entropy between that probability of "good" and the MOS scaled
to [0, 1], per trained factor (``overall`` from the MOS column; technical / rational / natural
where the table has their columns), averaged. It is the proper scoring rule of a Bernoulli
probability, so the score is pushed towards the scaled MOS itself (not only its rank): the run
time thresholds p (``hq_skip.p_bound``, the cask bounds) on that scale. Gradients stay alive at
saturation (binary cross-entropy on logits), unlike a squared error on probabilities.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grefine_core.errors import InputError, UsageError
from grefine_training.data import FACTOR_NAMES, MosTable, normalise_mos, split_indices

log = logging.getLogger("grefine.training")

#: The factors in the released files' order.
FACTORS: tuple[str, ...] = ("overall", *FACTOR_NAMES)
#: Learned context vectors per class and their split around the class tokens (released layout).
N_CTX, N_PREFIX, N_SUFFIX, N_CLASS_ROWS = 16, 1, 60, 3
#: Format version of ``checkpoint.pt``.
CHECKPOINT_VERSION = 1
CHECKPOINT = "checkpoint.pt"
VAL_SCORES = "val_scores.csv"
#: The training text path must reproduce the run-time one on the initial prompts within this.
SELF_CHECK_ATOL = 1e-5


@dataclass
class TrainOptions:
    """Settings of one training run (``grefine train-pq --help`` names them).

    :ivar epochs: the most epochs (the paper: 50).
    :ivar batch_size: images per optimisation step.
    :ivar lr: Adam's learning rate (the paper gives none; 0.002 as CoOp).
    :ivar weight_decay: Adam's weight decay on ``ctx``.
    :ivar patience: stop after this many epochs without a better validation SRCC.
    :ivar val_fraction: the share of rows held out for validation.
    :ivar seed: the seed of the split, the random context vectors and the batch order.
    :ivar init: ``"text"`` (``good_text`` / ``bad_text``) or ``"released"`` (PQ files).
    :ivar good_text: the "good" class text of a text initialisation.
    :ivar bad_text: the "bad" class text.
    :ivar init_from: the folder of the PQ files of ``init="released"`` (``""``: the loader's
        search, ``$GREFINE_PQ_DIR`` then ``~/.cache/grefine/pq_embeddings``).
    :ivar untrained: factors without a MOS column get ``"overall"`` (a copy of the trained
        overall prompt) or ``"init"`` (their initial prompt).
    :ivar feature_batch: images per forward when caching the image features.
    :ivar mos_range: scale MOS from this ``(lo, hi)`` instead of each column's min and max.
    :ivar cache_file: the feature cache (default ``OUT/features.pt``).
    :ivar stop_after: stop after this many epochs of this invocation (rerun to continue).
    :ivar restart: ignore a checkpoint in the output folder.
    """

    epochs: int = 50
    batch_size: int = 32
    lr: float = 0.002
    weight_decay: float = 0.0
    patience: int = 10
    val_fraction: float = 0.2
    seed: int = 0
    init: str = "text"
    good_text: str = "a good photo."
    bad_text: str = "a bad photo."
    init_from: str = ""
    untrained: str = "overall"
    feature_batch: int = 16
    mos_range: tuple[float, float] | None = None
    cache_file: str = ""
    stop_after: int | None = None
    restart: bool = False

    def check(self) -> None:
        """:raises UsageError: a value out of range, naming the option."""
        bad = []
        if self.epochs < 1:
            bad.append(f"--epochs {self.epochs}: at least 1")
        if self.batch_size < 1:
            bad.append(f"--batch-size {self.batch_size}: at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            bad.append(f"--lr {self.lr}: a positive number")
        if self.weight_decay < 0:
            bad.append(f"--weight-decay {self.weight_decay}: 0 or more")
        if self.patience < 1:
            bad.append(f"--patience {self.patience}: at least 1")
        if self.init not in ("text", "released"):
            bad.append(f"--init {self.init!r}: 'text' or 'released'")
        if self.untrained not in ("overall", "init"):
            bad.append(f"--untrained-factors {self.untrained!r}: 'overall' or 'init'")
        if self.stop_after is not None and self.stop_after < 1:
            bad.append(f"--stop-after {self.stop_after}: at least 1")
        if bad:
            raise UsageError(f"invalid training option {bad[0]}")


@dataclass
class TrainResult:
    """What a run did.

    :ivar out: the output folder.
    :ivar finished: the run is complete (all epochs, or stopped early) and the files are written.
    :ivar stopped_early: it stopped for want of progress (``patience``).
    :ivar epochs_run: epochs completed so far (over every invocation).
    :ivar best_epoch: the epoch whose prompts are (or will be) saved; 0 = the initialisation.
    :ivar history: one entry per epoch (entry 0: the initialisation): losses, validation
        SRCC/PLCC per trained factor and of p.
    :ivar trained: ``{factor: MOS column}`` of the trained factors.
    :ivar files: ``{file name: sha256}`` of the written prompt files (empty until finished).
    :ivar val_scores: per validation image, the saved files' factor scores and p (once finished).
    """

    out: Path
    finished: bool
    stopped_early: bool
    epochs_run: int
    best_epoch: int
    history: list[dict[str, Any]]
    trained: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)
    val_scores: list[dict[str, Any]] = field(default_factory=list)

    @property
    def initial(self) -> dict[str, Any]:
        """The metrics of the initialisation (epoch 0)."""
        return self.history[0]

    @property
    def best(self) -> dict[str, Any]:
        """The metrics of the saved epoch."""
        return self.history[self.best_epoch]


# ---------------------------------------------------------------------------- the backbone


def check_trainable(backbone: Any) -> None:
    """Refuse a backbone whose PQ text side cannot be trained.

    :raises UsageError: a planted text side (the oracle), no differentiable ``prompt_text``
        module, or a dtype other than float32.
    """
    import torch
    from grefine_quality.constants import PQ_EOT_INDEX

    name = getattr(backbone, "description", type(backbone).__name__)
    if getattr(backbone, "planted_pq_prompts", None) is not None:
        raise UsageError(
            f"backbone {name!r} plants its PQ text side (fixed good/bad features): there is "
            "nothing to train on it; it serves `grefine calibrate` only. Train on the 'clip' "
            "backbone (e.g. --preset paper, or --preset tiny for a plumbing check)"
        )
    module = getattr(backbone, "prompt_text", None)
    if not isinstance(module, torch.nn.Module) or getattr(module, "eot_index", None) != (
        PQ_EOT_INDEX
    ):
        raise UsageError(
            f"backbone {name!r} has no differentiable PQ text encoder (a torch module "
            f"`prompt_text` reading the end-of-text row {PQ_EOT_INDEX}); train on the torch "
            "'clip' backbone ([plugins.backbone] name = 'clip')"
        )
    dtype = getattr(backbone, "dtype", torch.float32)
    if dtype != torch.float32:
        raise UsageError(
            f"train-pq needs the backbone in float32, it is in {dtype}; use --dtype float32 "
            "(or dtype = 'auto', which keeps CLIP in float32)"
        )


def encode_prompts(backbone: Any, embeddings: Any) -> Any:
    """Text features ``[2, D]`` of assembled prompts ``[2, 77, W]`` with gradients: the run-time
    ``encode_prompt_embeddings`` (rows up to the end-of-text, the backbone's device and dtype)
    without its inference mode."""
    from grefine_quality.constants import PQ_EOT_INDEX

    x = embeddings[:, : PQ_EOT_INDEX + 1].to(device=backbone.device, dtype=backbone.dtype)
    return backbone.prompt_text(x).float()


def _token_rows(backbone: Any, text: str, what: str) -> tuple[Any, Any, Any, Any]:
    """``(SOT row [1, W], word rows [k, W], EOT row [1, W], pad row [1, W])`` of ``text``."""
    import torch

    ids = backbone.tokenize([text])[0]
    eot = int(ids.argmax())
    words = ids[1:eot]
    if not 3 <= len(words) <= 3 + N_CTX // 2:
        raise UsageError(
            f"{what} {text!r} is {len(words)} CLIP tokens; a class text must be 3 to "
            f"{3 + N_CTX // 2} tokens (its last 3 become the class tokens, the others the "
            "context vectors before them), e.g. 'a good photo.'"
        )
    table = backbone.prompt_text.text.token_embedding.weight
    rows = table[torch.cat([ids[:1], words, ids[eot : eot + 1], torch.zeros(1, dtype=ids.dtype)])]
    rows = rows.detach().float().cpu()
    return rows[:1], rows[1 : 1 + len(words)], rows[-2:-1], rows[-1:]


def text_init(backbone: Any, good: str, bad: str, seed: int) -> dict[str, Any]:
    """Prompt parameters from two class texts, in the released layout.

    Each text's last 3 tokens are the class tokens (``suffix[:, :3]``, as "good photo ." in the
    released files), the end-of-text follows (``suffix[:, 3]``) and the padding token fills the
    rest of the suffix; the text's earlier tokens (``"a"``) initialise the context vectors just
    before the class tokens; the other context vectors are ``N(0, 0.02^2)`` (CoOp), seeded.

    :returns: ``{"prompt_learner.ctx": [2, 16, W], "prompt_learner.token_prefix": [2, 1, W],
        "prompt_learner.token_suffix": [2, 60, W]}`` (float32, CPU).
    """
    import torch

    width = int(backbone.text_width)
    gen = torch.Generator().manual_seed(int(seed))
    ctx = 0.02 * torch.randn((2, N_CTX, width), generator=gen)
    prefix, suffix = [], []
    for row, (text, what) in enumerate(((good, "--good-text"), (bad, "--bad-text"))):
        sot, words, eot, pad = _token_rows(backbone, text, what)
        lead = words[:-N_CLASS_ROWS]
        if len(lead):
            ctx[row, N_CTX // 2 - len(lead) : N_CTX // 2] = lead
        prefix.append(sot)
        pads = pad.expand(N_SUFFIX - N_CLASS_ROWS - 1, width)
        suffix.append(torch.cat([words[-N_CLASS_ROWS:], eot, pads], 0))
    return {
        "prompt_learner.ctx": ctx.contiguous(),
        "prompt_learner.token_prefix": torch.stack(prefix).contiguous(),
        "prompt_learner.token_suffix": torch.stack(suffix).contiguous(),
    }


def split_embeddings(embeddings: Any) -> dict[str, Any]:
    """The inverse of :meth:`grefine_quality.pq.PQPrompts.assemble`: ``[2, 77, W]`` -> the three
    parameter tensors (exact: the assembly is a concatenation)."""
    import torch

    half = N_CTX // 2
    a, b = N_PREFIX + half, N_PREFIX + half + N_CLASS_ROWS
    return {
        "prompt_learner.ctx": torch.cat([embeddings[:, N_PREFIX:a], embeddings[:, b : b + half]], 1)
        .float()
        .contiguous(),
        "prompt_learner.token_prefix": embeddings[:, :N_PREFIX].float().contiguous(),
        "prompt_learner.token_suffix": torch.cat([embeddings[:, a:b], embeddings[:, b + half :]], 1)
        .float()
        .contiguous(),
    }


def initial_params(backbone: Any, options: TrainOptions) -> tuple[dict[str, dict[str, Any]], dict]:
    """``({factor: params}, what it was)`` of the initialisation."""
    if options.init == "released":
        from grefine_quality.pq import load_pq_prompts

        prompts = load_pq_prompts(options.init_from or None)
        if prompts.width != backbone.text_width:
            raise UsageError(
                f"--init released: the PQ files have width {prompts.width}, this backbone's text "
                f"tower {backbone.text_width}; use --init text"
            )
        from grefine_quality.pq import sha256_of

        params = {f: split_embeddings(prompts.embeddings[f]) for f in FACTORS}
        files = {
            f: {"path": prompts.files[f], "sha256": sha256_of(prompts.files[f])} for f in FACTORS
        }
        return params, {"init": "released", "files": files}
    params = {
        f: text_init(backbone, options.good_text, options.bad_text, options.seed * 7919 + i)
        for i, f in enumerate(FACTORS)
    }
    return params, {"init": "text", "good": options.good_text, "bad": options.bad_text}


# ---------------------------------------------------------------------------- scores, metrics


def correlations(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """``{"srcc", "plcc"}`` (Spearman, Pearson); 0 for a constant prediction."""
    from scipy.stats import rankdata

    def pearson(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a - a.mean(), b - b.mean()
        den = float(np.sqrt((a * a).sum() * (b * b).sum()))
        return float((a * b).sum() / den) if den > 0 else 0.0

    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    return {"srcc": pearson(rankdata(p), rankdata(t)), "plcc": pearson(p, t)}


def score_features(
    backbone: Any, embeddings: Mapping[str, Any], feats: Any, compat: str, tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(factor scores [n, 4] float32, p [n] float64)`` of images given their cached class
    tokens, computed as the run-time class computes them
    (:meth:`grefine_quality.pq.PerceptualQuality.from_tokens`: its text features, the logits of
    a ``[1, N, D]`` token tensor, the softmax over each good/bad pair, the cask bounds), so the
    scores reported here are the plugin's for the same image (float32 kernels of the same shapes).

    :param tokens: the backbone's token count ``N`` (the class token is row 0 of ``N`` rows; the
        other rows do not change row 0's logits).
    """
    import torch
    from grefine_quality import ops
    from grefine_quality.pq import PerceptualQuality, PQPrompts

    n_f = len(FACTORS)
    with torch.inference_mode():
        emb = {f: embeddings[f].detach() for f in FACTORS}
        pq = PerceptualQuality(backbone, PQPrompts(embeddings=emb), compat=compat)
        text = pq.text_features
        x = torch.zeros((1, int(tokens), text.shape[1]), dtype=torch.float32, device=text.device)
        rows = []
        for f_cls in feats:
            x[0, 0] = f_cls.to(text.device)
            logits = x @ text.to(x.device).t()  # [1, N, 8], as PerceptualQuality.logits
            good = logits.reshape(1, logits.shape[1], n_f, 2).softmax(-1)[..., 0]
            rows.append(good[:, 0].cpu())
        scores = torch.cat(rows, 0).numpy() if rows else np.zeros((0, n_f), np.float32)
    p = np.asarray(
        [
            float(
                np.clip(
                    ops.cask_score(dict(zip(FACTORS, map(float, r), strict=True)), pq.cask_bounds),
                    0.0,
                    1.0,
                )
            )
            for r in scores
        ],
        np.float64,
    )
    return scores, p


# ---------------------------------------------------------------------------- the run


@dataclass
class _Data:
    table: MosTable
    trained: dict[str, str]
    targets: dict[str, Any]  # factor -> float32 tensor [n] in [0, 1]
    ranges: dict[str, tuple[float, float]]
    train_idx: np.ndarray
    val_idx: np.ndarray
    feats: Any  # [n, D]
    tokens: int  # the backbone's token count N


class _Trainer:
    """One run's state: the learned ``ctx`` per trained factor, Adam, the best epoch."""

    def __init__(self, backbone: Any, compat: str, data: _Data, options: TrainOptions):
        import torch

        self.backbone, self.compat, self.data, self.options = backbone, compat, data, options
        self.init_params, self.init_info = initial_params(backbone, options)
        self.device = backbone.device
        self.ctx = {
            f: torch.nn.Parameter(self.init_params[f]["prompt_learner.ctx"].clone().to(self.device))
            for f in data.trained
        }
        self.fixed = {
            f: {
                k: v.to(self.device)
                for k, v in self.init_params[f].items()
                if k != "prompt_learner.ctx"
            }
            for f in data.trained
        }
        self.optimizer = torch.optim.Adam(
            list(self.ctx.values()), lr=options.lr, weight_decay=options.weight_decay
        )
        self.feats = data.feats.to(self.device)
        self.targets = {f: t.to(self.device) for f, t in data.targets.items()}
        self.best_epoch, self.best_score = 0, -math.inf
        self.best_ctx = {f: c.detach().cpu().clone() for f, c in self.ctx.items()}
        self.bad_epochs, self.epoch, self.stopped = 0, 0, False
        self.history: list[dict[str, Any]] = []

    # -- prompts
    def embedding(self, factor: str, ctx: Any | None = None) -> Any:
        from grefine_quality.pq import PQPrompts

        params = {
            **self.fixed[factor],
            "prompt_learner.ctx": self.ctx[factor] if ctx is None else ctx,
        }
        return PQPrompts.assemble(params)

    def effective_params(self, ctx: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """``{factor: params}`` of all four files for the learned ``ctx`` (float32, CPU): the
        trained factors with their ``ctx``, the others a copy of overall or their initial prompt
        (``options.untrained``)."""
        out: dict[str, dict[str, Any]] = {}
        for f in ctx:
            fixed = {k: v.detach().cpu() for k, v in self.fixed[f].items()}
            out[f] = {**fixed, "prompt_learner.ctx": ctx[f].detach().cpu()}
        for f in FACTORS:
            if f not in out:
                source = out["overall"] if self.options.untrained == "overall" else None
                out[f] = dict(source if source is not None else self.init_params[f])
        return {f: {k: v.clone().float().contiguous() for k, v in out[f].items()} for f in FACTORS}

    def self_check(self) -> float:
        """Max |training text path - run-time text path| on the initial overall prompt."""
        import torch
        from grefine_quality.constants import PQ_EOT_INDEX

        with torch.no_grad():
            emb = self.embedding("overall")
            mine = encode_prompts(self.backbone, emb)
            theirs = self.backbone.encode_prompt_embeddings(emb.detach(), PQ_EOT_INDEX)
        diff = float((mine - theirs.to(mine.device)).abs().max())
        if not diff <= SELF_CHECK_ATOL:
            raise UsageError(
                f"backbone {self.backbone.description!r}: its prompt_text module gives text "
                f"features {diff:.3g} away from encode_prompt_embeddings; train-pq needs the two "
                "to agree"
            )
        return diff

    # -- one epoch
    def train_epoch(self, epoch: int) -> float:
        import torch
        import torch.nn.functional as F

        idx = torch.from_numpy(self.data.train_idx)
        gen = torch.Generator().manual_seed(self.options.seed * 1_000_003 + epoch)
        order = idx[torch.randperm(len(idx), generator=gen)]
        total, count = 0.0, 0
        for start in range(0, len(order), self.options.batch_size):
            batch = order[start : start + self.options.batch_size].to(self.device)
            x = self.feats[batch]
            losses = []
            for f in self.data.trained:
                text = encode_prompts(self.backbone, self.embedding(f))  # [2, D]
                logits = x @ text.t()
                losses.append(
                    F.binary_cross_entropy_with_logits(
                        logits[:, 0] - logits[:, 1], self.targets[f][batch]
                    )
                )
            loss = torch.stack(losses).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        return total / max(count, 1)

    def evaluate(self, ctx: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Validation metrics of ``ctx`` (default: the current one)."""
        import torch

        ctx = ctx if ctx is not None else self.ctx
        params = self.effective_params(ctx)
        from grefine_quality.pq import PQPrompts

        emb = {f: PQPrompts.assemble(params[f]) for f in FACTORS}
        val = torch.from_numpy(self.data.val_idx)
        scores, p = score_features(
            self.backbone, emb, self.data.feats[val], self.compat, self.data.tokens
        )
        table = self.data.table
        out: dict[str, Any] = {"val": {}, "val_loss": 0.0}
        eps = 1e-7
        for i, f in enumerate(FACTORS):
            if f not in self.data.trained:
                continue
            y = self.data.targets[f][val].numpy().astype(np.float64)
            q = np.clip(scores[:, i].astype(np.float64), eps, 1 - eps)
            out["val_loss"] += float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean())
            out["val"][f] = correlations(scores[:, i], table.mos[f][self.data.val_idx])
        out["val_loss"] /= len(self.data.trained)
        out["p"] = correlations(p, table.mos["overall"][self.data.val_idx])
        out["score"] = float(np.mean([m["srcc"] for m in out["val"].values()]))
        return out

    # -- checkpoint
    def state(self, fingerprint: str) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "fingerprint": fingerprint,
            "epoch": self.epoch,
            "ctx": {f: c.detach().cpu().clone() for f, c in self.ctx.items()},
            "optimizer": self.optimizer.state_dict(),
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "best_ctx": self.best_ctx,
            "bad_epochs": self.bad_epochs,
            "stopped": self.stopped,
            "history": json.dumps(self.history),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        import torch

        with torch.no_grad():
            for f, c in self.ctx.items():
                c.copy_(state["ctx"][f].to(c.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.best_epoch = int(state["best_epoch"])
        self.best_score = float(state["best_score"])
        self.best_ctx = {f: t.clone() for f, t in state["best_ctx"].items()}
        self.bad_epochs = int(state["bad_epochs"])
        self.stopped = bool(state["stopped"])
        self.history = json.loads(state["history"])


def _fingerprint(
    table: MosTable, data: _Data, backbone_id: dict, compat: str, options: TrainOptions, init: dict
) -> dict[str, Any]:
    """Everything that shapes the trajectory (not ``epochs``, ``patience`` or ``stop_after``,
    which only decide where it ends)."""
    return {
        "data": {
            "mos_sha256": table.sha256,
            "images": str(table.images.resolve()),
            "columns": table.layout.columns(),
            "ranges": {f: list(r) for f, r in data.ranges.items()},
            "rows": len(table),
        },
        "split": {"seed": options.seed, "val_fraction": options.val_fraction},
        "backbone": backbone_id,
        "compat": compat,
        "init": init,
        "optimiser": {
            "lr": options.lr,
            "batch_size": options.batch_size,
            "weight_decay": options.weight_decay,
            "seed": options.seed,
        },
        "untrained": options.untrained,
    }


def _check_out(out: Path) -> None:
    """Refuse an output folder whose ``PQ-*.pth`` files were not written by train-pq (no
    manifest of its kind beside them): they are never overwritten."""
    from grefine_quality.constants import pq_filename
    from grefine_quality.trained import TRAINED_MANIFEST, TRAINED_MANIFEST_KIND

    present = [pq_filename(f) for f in FACTORS if (out / pq_filename(f)).exists()]
    if not present:
        return
    try:
        kind = json.loads((out / TRAINED_MANIFEST).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != TRAINED_MANIFEST_KIND:
        raise UsageError(
            f"--out {str(out)!r} holds {', '.join(present)} that train-pq did not write (no "
            f"{TRAINED_MANIFEST} of kind {TRAINED_MANIFEST_KIND!r}); choose another --out"
        )


def _differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}")
    return out


def prepare_data(table: MosTable, features: Any, tokens: int, options: TrainOptions) -> _Data:
    """Targets, ranges and the split of a checked table with its image features."""
    import torch

    trained = {"overall": table.layout.mos_col, **table.layout.factor_cols}
    targets, ranges = {}, {}
    for f, column in trained.items():
        y, ranges[f] = normalise_mos(table.mos[f], column, options.mos_range)
        targets[f] = torch.from_numpy(y)
    train_idx, val_idx = split_indices(len(table), options.val_fraction, options.seed)
    return _Data(table, trained, targets, ranges, train_idx, val_idx, features, tokens)


def _epoch_line(entry: Mapping[str, Any], epochs: int, best: int) -> str:
    val = ", ".join(
        f"{f} SRCC {m['srcc']:.3f} PLCC {m['plcc']:.3f}" for f, m in entry["val"].items()
    )
    loss = "" if entry["train_loss"] is None else f"loss {entry['train_loss']:.4f}, "
    return (
        f"epoch {entry['epoch']}/{epochs}: {loss}val loss {entry['val_loss']:.4f}, {val}; "
        f"p SRCC {entry['p']['srcc']:.3f} (best epoch {best})"
    )


def train_pq(
    backbone: Any,
    table: MosTable,
    out: str | Path,
    options: TrainOptions | None = None,
    *,
    compat: str = "paper",
    image_settings: Any = None,
    base: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train the PQ prompts on ``table`` and write them to ``out`` (docs/training.md).

    The run resumes from ``out/checkpoint.pt`` when it was made with the same data, split,
    backbone, initialisation and optimiser settings (``options.restart`` ignores it; a checkpoint
    of another run is refused).

    :param backbone: a trainable backbone (:func:`check_trainable`), frozen.
    :param table: the checked MOS table (:func:`grefine_training.data.read_mos_table`).
    :param out: the output folder: ``PQ-*.pth``, ``manifest.json``, ``val_scores.csv``,
        ``preset.toml``, ``checkpoint.pt``, ``features.pt``.
    :param options: :class:`TrainOptions`.
    :param compat: the PQ token normalisation the prompts are trained (and used) under.
    :param image_settings: the configuration's ``image`` limits (default: grefine's).
    :param base: what the manifest and ``preset.toml`` record about the configuration
        (``{"preset": name, "settings": {its --config and --set settings}}``).
    :raises UsageError: ``out`` holds prompt files that train-pq did not write (the released
        ones, say), or the checkpoint of another run.
    :returns: a :class:`TrainResult`.
    """
    import torch
    from tqdm import tqdm

    from grefine_core.atomic import atomic_path, ensure_writable_dir
    from grefine_core.config import ImageSettings
    from grefine_training import features as feature_cache
    from grefine_training import manifest

    options = options or TrainOptions()
    options.check()
    check_trainable(backbone)
    out = ensure_writable_dir(Path(out).expanduser())
    _check_out(out)
    image_settings = image_settings if image_settings is not None else ImageSettings()
    started = time.time()
    backbone_id = feature_cache.backbone_identity(backbone)
    cache_file = (
        Path(options.cache_file).expanduser() if options.cache_file else out / "features.pt"
    )
    feats, tokens = feature_cache.image_features(
        backbone,
        table.files,
        compat=compat,
        image_settings=image_settings,
        cache_file=cache_file,
        batch_size=options.feature_batch,
        identity=backbone_id,
    )
    data = prepare_data(table, feats, tokens, options)
    trainer = _Trainer(backbone, compat, data, options)
    check_diff = trainer.self_check()
    fp = json.dumps(
        _fingerprint(table, data, backbone_id, compat, options, trainer.init_info), sort_keys=True
    )
    ckpt = out / CHECKPOINT
    if ckpt.is_file() and not options.restart:
        try:
            state = torch.load(str(ckpt), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise InputError(
                f"checkpoint {str(ckpt)!r} is unreadable ({e}); use --restart to start over"
            ) from None
        if state.get("version") != CHECKPOINT_VERSION or state.get("fingerprint") != fp:
            old = json.loads(state.get("fingerprint") or "{}")
            diff = ", ".join(_differences(old, json.loads(fp))[:6]) or "its format"
            raise UsageError(
                f"--out {str(out)!r} holds the checkpoint of another training run (it differs in "
                f"{diff}); use --restart to start over, or another --out"
            )
        trainer.restore(state)
        log.warning("train-pq: resuming %s after epoch %d", out, trainer.epoch)
    if not trainer.history:
        entry = {"epoch": 0, "train_loss": None, **trainer.evaluate(), "seconds": 0.0}
        trainer.history.append(entry)
        trainer.best_score = entry["score"]
    bar_on = sys.stderr.isatty()
    budget = options.stop_after
    ran = 0
    start_at = min(trainer.epoch, options.epochs)
    bar = tqdm(total=options.epochs, initial=start_at, desc="train-pq", unit="epoch", disable=None)
    with bar:
        if not bar_on:
            print(_epoch_line(trainer.history[0], options.epochs, 0), file=sys.stderr)
        while not trainer.stopped and trainer.epoch < options.epochs:
            if budget is not None and ran >= budget:
                break
            t0 = time.perf_counter()
            epoch = trainer.epoch + 1
            loss = trainer.train_epoch(epoch)
            metrics = trainer.evaluate()
            trainer.epoch = epoch
            entry = {"epoch": epoch, "train_loss": loss, **metrics}
            entry["seconds"] = round(time.perf_counter() - t0, 4)
            trainer.history.append(entry)
            if metrics["score"] > trainer.best_score:
                trainer.best_score, trainer.best_epoch = metrics["score"], epoch
                trainer.bad_epochs = 0
                trainer.best_ctx = {f: c.detach().cpu().clone() for f, c in trainer.ctx.items()}
            else:
                trainer.bad_epochs += 1
                trainer.stopped = trainer.bad_epochs >= options.patience
            with atomic_path(ckpt) as tmp:
                torch.save(trainer.state(fp), str(tmp))
            ran += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", srcc=f"{metrics['score']:.3f}")
            if not bar_on:
                print(_epoch_line(entry, options.epochs, trainer.best_epoch), file=sys.stderr)
    result = TrainResult(
        out=out,
        finished=trainer.stopped or trainer.epoch >= options.epochs,
        stopped_early=trainer.stopped,
        epochs_run=trainer.epoch,
        best_epoch=trainer.best_epoch,
        history=trainer.history,
        trained=dict(data.trained),
    )
    if not result.finished:
        return result
    params = trainer.effective_params(trainer.best_ctx)
    info = {
        "base": dict(base or {}),
        "compat": compat,
        "backbone": backbone_id,
        "data": {
            "mos_file": str(table.path.resolve()),
            "mos_sha256": table.sha256,
            "images": str(table.images.resolve()),
            "layout": table.layout.name,
            "columns": table.layout.columns(),
            "rows": len(table),
            "mos_ranges": {f: list(r) for f, r in data.ranges.items()},
            "targets": "(MOS - lo) / (hi - lo), clipped to [0, 1]",
        },
        "split": {
            "seed": options.seed,
            "val_fraction": options.val_fraction,
            "train": int(len(data.train_idx)),
            "val": int(len(data.val_idx)),
            "val_images": [table.names[i] for i in data.val_idx],
        },
        "trained_factors": dict(data.trained),
        "untrained_factors": {
            f: ("copy of overall" if options.untrained == "overall" else "initialisation")
            for f in FACTORS
            if f not in data.trained
        },
        "init": trainer.init_info,
        "training": {
            "loss": "soft-label binary cross-entropy of softmax(class-token logits)[good] against "
            "the scaled MOS, mean over the trained factors",
            "optimiser": "Adam",
            "options": {k: v for k, v in asdict(options).items() if k not in ("restart",)},
            "epochs_run": trainer.epoch,
            "best_epoch": trainer.best_epoch,
            "stopped_early": trainer.stopped,
            "selection": "mean validation SRCC over the trained factors",
            "text_path_self_check_max_abs_diff": check_diff,
            "seconds_this_invocation": round(time.time() - started, 2),
        },
        "metrics": {"initial": trainer.history[0], "best": trainer.history[trainer.best_epoch]},
        "history": trainer.history,
    }
    result.files = manifest.write_prompt_files(out, params, info)
    # Reload through the loader (it checks every file against the manifest) and score the
    # validation images with what was saved.
    from grefine_quality.pq import load_pq_prompts

    saved = load_pq_prompts(out)
    val_feats = feats[torch.from_numpy(data.val_idx)]
    scores, p = score_features(backbone, saved.embeddings, val_feats, compat, tokens)
    rows = []
    for j, i in enumerate(data.val_idx):
        row: dict[str, Any] = {"image": table.names[i], "mos": float(table.mos["overall"][i])}
        row.update({f: float(scores[j, k]) for k, f in enumerate(FACTORS)})
        row["p"] = float(p[j])
        rows.append(row)
    manifest.write_val_scores(out / VAL_SCORES, rows)
    manifest.write_preset(
        out / "preset.toml",
        base=dict(base or {}),
        prompts=out,
        compat=compat,
        comment=f"PQ prompts trained by grefine train-pq on {table.path.name} "
        f"({len(table)} images; validation SRCC {trainer.history[0]['score']:.3f} -> "
        f"{trainer.history[trainer.best_epoch]['score']:.3f} at epoch {trainer.best_epoch})",
    )
    result.val_scores = rows
    return result
