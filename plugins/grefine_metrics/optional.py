"""Metrics that need downloaded weights: pyiqa's no-reference IQA models, CLIPScore, ImageReward,
PickScore and HPSv2 (the indicators of the paper's Tables 2-5).

Nothing heavy is imported here: availability is checked with ``importlib.util.find_spec`` and by
looking for the weight files in their usual caches; models load on the first ``compute`` call
and stay cached for the process. When a package or its weights are absent the metric reports
``available() == (False, "<what to install/download and where>")``; ``compute`` then raises
:class:`~grefine_core.errors.MissingWeightsError` with the same text.

Weights are never fetched behind the user's back: a metric is available only when its weights
are already in the cache where its package looks for them, unless ``GREFINE_ALLOW_DOWNLOADS=1``
is set (and no ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``/``GREFINE_OFFLINE``), in which case the
package downloads them on first use as it would without grefine.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from grefine_core.errors import MissingWeightsError
from grefine_metrics.registry import Metric

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "GREFINE_OFFLINE")


ALLOW_DOWNLOADS_VAR = "GREFINE_ALLOW_DOWNLOADS"


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def is_offline() -> bool:
    """Whether the environment forbids downloads."""
    return any(_truthy(v) for v in OFFLINE_VARS)


def downloads_allowed() -> bool:
    """Whether weight-based metrics may let their packages download missing weights."""
    return _truthy(ALLOW_DOWNLOADS_VAR) and not is_offline()


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder (``HF_HUB_CACHE``, ``HF_HOME/hub`` or the default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def torch_hub_dir() -> Path:
    """torch.hub's folder (``TORCH_HOME/hub``), computed without importing torch."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "torch" / "hub"


def hf_repo_cached(repo_id: str) -> bool:
    """Whether a snapshot of the hub repository ``repo_id`` is in the local cache."""
    snaps = hf_hub_cache() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return snaps.is_dir() and any(p.is_dir() and any(p.iterdir()) for p in snaps.iterdir())


def _glob_any(folders: list[Path], pattern: str) -> bool:
    return any(folder.is_dir() and any(folder.rglob(pattern)) for folder in folders)


@dataclass
class Requirement:
    """A package (import name + pip name) and, optionally, weights that must be cached.

    :ivar weights_present: ``() -> bool`` looking in the cache; ``None`` when nothing to check.
    :ivar weights_hint: where the weights come from and where they are expected.
    """

    module: str
    pip: str
    weights_present: Callable[[], bool] | None = None
    weights_hint: str = ""
    extra_modules: tuple[str, ...] = field(default_factory=tuple)

    def check(self) -> tuple[bool, str]:
        for mod in (self.module, *self.extra_modules):
            if importlib.util.find_spec(mod) is None:
                hint = f"; {self.weights_hint}" if self.weights_hint else ""
                return False, f"package {mod!r} is not installed: pip install {self.pip}{hint}"
        if (
            self.weights_present is not None
            and not downloads_allowed()
            and not self.weights_present()
        ):
            return False, (
                f"weights not found: {self.weights_hint} (or set {ALLOW_DOWNLOADS_VAR}=1 to let "
                f"{self.pip} download them on first use)"
            )
        return True, ""

    def require(self, metric: str) -> None:
        """Raise :class:`MissingWeightsError` naming ``metric`` when :meth:`check` fails."""
        ok, why = self.check()
        if not ok:
            raise MissingWeightsError(f"metric {metric!r}: {why}")


# ----------------------------------------------------------------------------- model cache

_CACHE: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _cached(key: tuple[str, str], factory: Callable[[], Any], name: str, hint: str) -> Any:
    with _LOCK:
        if key not in _CACHE:
            try:
                _CACHE[key] = factory()
            except MissingWeightsError:
                raise
            except (OSError, RuntimeError, ValueError, ImportError) as e:
                raise MissingWeightsError(
                    f"metric {name!r} could not load its model ({type(e).__name__}: {e}); {hint}"
                ) from e
        return _CACHE[key]


def _to_tensor(image: Image.Image, device: str) -> Any:
    import torch

    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).to(device)


# ----------------------------------------------------------------------------- pyiqa


@dataclass(frozen=True)
class PyiqaSpec:
    """One pyiqa no-reference model: our name, pyiqa's name, table label, weight file pattern."""

    name: str
    pyiqa_name: str
    label: str
    weight_glob: str
    description: str


PYIQA_SPECS: tuple[PyiqaSpec, ...] = (
    PyiqaSpec("clipiqa", "clipiqa", "CLIPQA", "*RN50*", "CLIP-IQA (Wang et al. 2023), pyiqa"),
    PyiqaSpec("unique", "unique", "UNIQUE", "*UNIQUE*", "UNIQUE (Zhang et al. 2021), pyiqa"),
    PyiqaSpec("liqe", "liqe", "LIQE", "*LIQE*", "LIQE (Zhang et al. 2023), pyiqa"),
    PyiqaSpec("dbcnn", "dbcnn", "DBCNN", "*DBCNN*", "DBCNN (Zhang et al. 2020), pyiqa"),
    PyiqaSpec(
        "topiq", "topiq_nr", "TOPIQ", "*cfanet_nr*", "TOPIQ no-reference (Chen et al. 2024), pyiqa"
    ),
    PyiqaSpec("cnniqa", "cnniqa", "CNNQA", "*CNNIQA*", "CNNIQA (Kang et al. 2014), pyiqa"),
    PyiqaSpec(
        "musiq", "musiq", "MUSIQ", "*musiq*", "MUSIQ, KonIQ checkpoint (Ke et al. 2021), pyiqa"
    ),
    PyiqaSpec(
        "qalign", "qalign", "Q-Align", "*", "Q-Align quality (Wu et al. 2024), pyiqa; 7B LMM"
    ),
)


def _pyiqa_dirs() -> list[Path]:
    return [torch_hub_dir() / "pyiqa", hf_hub_cache() / "models--chaofengc--IQA-PyTorch-Weights"]


def pyiqa_metric(spec: PyiqaSpec, device: str = "auto") -> Metric:
    """A :class:`Metric` wrapping ``pyiqa.create_metric(spec.pyiqa_name)`` (higher is better)."""
    if spec.name == "qalign":

        def present() -> bool:
            return hf_repo_cached("q-future/one-align")

        hint = (
            f"pyiqa's {spec.pyiqa_name!r} needs the hub repo q-future/one-align in {hf_hub_cache()}"
        )
    else:

        def present() -> bool:
            return _glob_any(_pyiqa_dirs(), spec.weight_glob)

        dirs = " or ".join(map(str, _pyiqa_dirs()))
        hint = f"pyiqa's {spec.pyiqa_name!r} needs a weight file matching {spec.weight_glob!r} in {dirs}"
    req = Requirement("pyiqa", "pyiqa", present, hint)

    def compute(before: Image.Image, after: Image.Image, mask: Any, prompt: str) -> float:
        req.require(spec.name)
        dev = resolve_device(device)

        def build() -> Any:
            import pyiqa

            return pyiqa.create_metric(spec.pyiqa_name, device=dev, as_loss=False)

        model = _cached(("pyiqa:" + spec.pyiqa_name, dev), build, spec.name, hint)
        import torch

        with torch.inference_mode():
            return float(model(_to_tensor(after, dev)).item())

    return Metric(
        name=spec.name,
        compute=compute,
        higher_is_better=True,
        label=spec.label,
        description=spec.description,
        group="perceptual",
        check=req.check,
    )


# ----------------------------------------------------------------------------- alignment


def clipscore_metric(
    model_name: str = "ViT-B-32-quickgelu", pretrained: str = "openai", device: str = "auto"
) -> Metric:
    """CLIPScore (Hessel et al. 2021): ``2.5 * max(cos(image, text), 0)`` with an open_clip model.

    :param pretrained: an open_clip tag (``openai``) or a local checkpoint file.
    """
    local = Path(pretrained).expanduser()
    is_file = pretrained not in ("", "openai") and local.suffix in (
        ".pt",
        ".pth",
        ".bin",
        ".safetensors",
    )
    repo = "timm/vit_base_patch32_clip_224.openai"

    def present() -> bool:
        return local.is_file() if is_file else hf_repo_cached(repo)

    hint = (
        f"open_clip fetches {model_name}/{pretrained} from the Hugging Face hub ({repo}) into "
        f"{hf_hub_cache()}; or set [plugins.metrics] clipscore_pretrained to a local checkpoint"
        if not is_file
        else f"checkpoint {local} must exist"
    )
    req = Requirement("open_clip", "open_clip_torch", present, hint)

    def compute(before: Image.Image, after: Image.Image, mask: Any, prompt: str) -> float:
        req.require("clipscore")
        dev = resolve_device(device)

        def build() -> Any:
            import open_clip

            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=str(local) if is_file else pretrained, device=dev
            )
            return model.eval(), preprocess, open_clip.get_tokenizer(model_name)

        model, preprocess, tokenizer = _cached(
            ("clipscore:" + model_name + pretrained, dev), build, "clipscore", hint
        )
        import torch

        with torch.inference_mode():
            img = model.encode_image(preprocess(after.convert("RGB")).unsqueeze(0).to(dev))
            txt = model.encode_text(tokenizer([prompt]).to(dev))
            cos = torch.nn.functional.cosine_similarity(img, txt).item()
        return 2.5 * max(cos, 0.0)

    return Metric(
        name="clipscore",
        compute=compute,
        higher_is_better=True,
        needs=frozenset({"prompt"}),
        label="CLIPS",
        description="CLIPScore 2.5*max(cos,0), open_clip ViT-B/32 OpenAI (Hessel et al. 2021)",
        group="alignment",
        check=req.check,
    )


def imagereward_metric(device: str = "auto") -> Metric:
    """ImageReward v1.0 (Xu et al. 2023) through the ``image-reward`` package."""
    folder = Path("~/.cache/ImageReward").expanduser()

    def present() -> bool:
        return (folder / "ImageReward.pt").is_file() and (
            hf_repo_cached("bert-base-uncased") or hf_repo_cached("google-bert/bert-base-uncased")
        )

    hint = (
        f"ImageReward.pt and med_config.json (hub repo THUDM/ImageReward) go to {folder}; "
        f"the bert-base-uncased tokenizer to {hf_hub_cache()}"
    )
    req = Requirement("ImageReward", "image-reward", present, hint)

    def compute(before: Image.Image, after: Image.Image, mask: Any, prompt: str) -> float:
        req.require("imagereward")
        dev = resolve_device(device)

        def build() -> Any:
            import ImageReward as RM

            return RM.load("ImageReward-v1.0", device=dev, download_root=str(folder))

        model = _cached(("imagereward", dev), build, "imagereward", hint)
        return float(model.score(prompt, [after.convert("RGB")]))

    return Metric(
        name="imagereward",
        compute=compute,
        higher_is_better=True,
        needs=frozenset({"prompt"}),
        label="ImgRw",
        description="ImageReward v1.0 (Xu et al. 2023)",
        group="alignment",
        check=req.check,
    )


def pickscore_metric(device: str = "auto") -> Metric:
    """PickScore v1 (Kirstain et al. 2023): ``logit_scale * cos(image, text)`` via transformers."""
    model_repo, proc_repo = "yuvalkirstain/PickScore_v1", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"

    def present() -> bool:
        return hf_repo_cached(model_repo) and hf_repo_cached(proc_repo)

    hint = f"the hub repos {model_repo} and {proc_repo} (processor) must be in {hf_hub_cache()}"
    req = Requirement("transformers", "transformers", present, hint)

    def compute(before: Image.Image, after: Image.Image, mask: Any, prompt: str) -> float:
        req.require("pickscore")
        dev = resolve_device(device)

        def build() -> Any:
            from transformers import AutoModel, AutoProcessor

            return AutoModel.from_pretrained(model_repo).eval().to(
                dev
            ), AutoProcessor.from_pretrained(proc_repo)

        model, processor = _cached(("pickscore", dev), build, "pickscore", hint)
        import torch

        with torch.inference_mode():
            img_in = processor(images=[after.convert("RGB")], return_tensors="pt").to(dev)
            txt_in = processor(
                text=[prompt], padding=True, truncation=True, max_length=77, return_tensors="pt"
            ).to(dev)
            img = torch.nn.functional.normalize(model.get_image_features(**img_in), dim=-1)
            txt = torch.nn.functional.normalize(model.get_text_features(**txt_in), dim=-1)
            return float((model.logit_scale.exp() * (img * txt).sum(-1)).item())

    return Metric(
        name="pickscore",
        compute=compute,
        higher_is_better=True,
        needs=frozenset({"prompt"}),
        label="PicS",
        description="PickScore v1 (Kirstain et al. 2023), logit_scale * cosine",
        group="alignment",
        check=req.check,
    )


def hpsv2_metric(version: str = "v2.1") -> Metric:
    """HPSv2 / v2.1 (Wu et al. 2023) through the ``hpsv2`` package (which picks its own device)."""

    def present() -> bool:
        return hf_repo_cached("xswu/HPSv2") and hf_repo_cached(
            "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
        )

    hint = (
        f"HPS_{version}_compressed.pt (hub repo xswu/HPSv2) and the open_clip ViT-H-14 laion2B "
        f"weights (laion/CLIP-ViT-H-14-laion2B-s32B-b79K) must be in {hf_hub_cache()}"
    )
    req = Requirement("hpsv2", "hpsv2", present, hint)

    def compute(before: Image.Image, after: Image.Image, mask: Any, prompt: str) -> float:
        req.require("hpsv2")

        def build() -> Any:
            import hpsv2

            return hpsv2

        hps = _cached(("hpsv2", version), build, "hpsv2", hint)
        return float(np.ravel(hps.score([after.convert("RGB")], prompt, hps_version=version))[0])

    return Metric(
        name="hpsv2",
        compute=compute,
        higher_is_better=True,
        needs=frozenset({"prompt"}),
        label="HPSv2",
        description=f"HPS {version} (Wu et al. 2023)",
        group="alignment",
        check=req.check,
    )
