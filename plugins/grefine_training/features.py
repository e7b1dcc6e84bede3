"""The frozen image side of PQ training: each image's normalised class token, computed once and
cached on disk (docs/training.md).

The image encoder is frozen, so an image's PQ logits depend on the prompts only through the text
features: an epoch then costs only the text side. The cached vector is exactly what the PQ
indicator multiplies with the text features at run time (``normalise_tokens(encode_image(
preprocess(load_image(file))))[:, 0]``, :class:`grefine_quality.pq.PerceptualQuality`).

The cache file holds ``{"version", "key", "tokens", "paths", "stamps", "features"}`` (a torch
file that loads with ``weights_only=True``; ``tokens`` is the backbone's token count ``N``, which
scoring needs to reproduce the run-time matrix shapes). Its key names the backbone (a sha256 of
its image and text weights), the token normalisation and the image-loading limits; an entry is
reused while its file's size and modification time are unchanged. It is written every few
hundred images, so an interrupted first pass resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("grefine.training")

#: Format version of the cache file.
CACHE_VERSION = 1
#: The cache is written after at most this many new images or this many seconds.
SAVE_EVERY_IMAGES = 256
SAVE_EVERY_SECONDS = 60.0


def _module_sha256(module: Any) -> str | None:
    """sha256 of a torch module's state (names, shapes, dtypes and bytes), or ``None``."""
    import torch

    if not isinstance(module, torch.nn.Module):
        return None
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def backbone_identity(backbone: Any) -> dict[str, Any]:
    """What identifies a backbone's features: its description, sizes and, for a torch backbone,
    the sha256 of its image tower (``visual``) and of its text tower (``prompt_text``)."""
    return {
        "description": str(getattr(backbone, "description", type(backbone).__name__)),
        "image_size": int(getattr(backbone, "image_size", 0)),
        "embed_dim": int(getattr(backbone, "embed_dim", 0)),
        "text_width": int(getattr(backbone, "text_width", 0)),
        "image_sha256": _module_sha256(getattr(backbone, "visual", None)),
        "text_sha256": _module_sha256(getattr(backbone, "prompt_text", None)),
    }


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def _load_cache(cache_file: Path, key: str) -> tuple[dict[str, tuple[list[int], Any]], int]:
    """``({path: (stamp, feature)}, tokens)`` from a cache file of this ``key`` (``({}, 0)`` when
    absent, of another key, or unreadable)."""
    import torch

    if not cache_file.is_file():
        return {}, 0
    try:
        obj = torch.load(str(cache_file), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - the cache is disposable
        log.warning("feature cache %s is unreadable (%s): recomputing", cache_file, e)
        return {}, 0
    if not isinstance(obj, dict) or obj.get("version") != CACHE_VERSION or obj.get("key") != key:
        log.warning("feature cache %s is for another backbone or settings: recomputing", cache_file)
        return {}, 0
    try:
        feats = obj["features"]
        entries = {
            p: (list(s), feats[i])
            for i, (p, s) in enumerate(zip(obj["paths"], obj["stamps"], strict=True))
        }
        return entries, int(obj["tokens"])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        log.warning("feature cache %s is malformed (%s): recomputing", cache_file, e)
        return {}, 0


def _save_cache(
    cache_file: Path, key: str, entries: dict[str, tuple[list[int], Any]], tokens: int
) -> None:
    import torch

    from grefine_core.atomic import atomic_path

    paths = sorted(entries)
    data = {
        "version": CACHE_VERSION,
        "key": key,
        "tokens": int(tokens),
        "paths": paths,
        "stamps": [entries[p][0] for p in paths],
        "features": torch.stack([entries[p][1] for p in paths]) if paths else torch.zeros(0),
    }
    with atomic_path(cache_file) as tmp:
        torch.save(data, str(tmp))


def cache_key(identity: dict[str, Any], compat: str, image_settings: Any) -> str:
    """The cache key: the backbone identity, the normalisation and the image-loading limits."""
    limits = image_settings.model_dump() if hasattr(image_settings, "model_dump") else {}
    return json.dumps({"backbone": identity, "compat": compat, "image": limits}, sort_keys=True)


def class_tokens(backbone: Any, images: Sequence[Any], compat: str) -> tuple[Any, int]:
    """``(normalised class tokens [B, D] float32 on the CPU, token count N)`` of PIL images, as
    PQ computes them."""
    import torch
    from grefine_quality import ops

    x = torch.cat([backbone.preprocess(im) for im in images], 0)
    tokens = backbone.encode_image(x)
    normalised = ops.normalise_tokens(tokens.float(), compat)  # type: ignore[arg-type]
    return normalised[:, 0].detach().cpu().contiguous(), int(tokens.shape[1])


def image_features(
    backbone: Any,
    files: Sequence[Path],
    *,
    compat: str,
    image_settings: Any,
    cache_file: Path | None,
    batch_size: int = 16,
    identity: dict[str, Any] | None = None,
) -> tuple[Any, int]:
    """``(features, N)``: the normalised class token of each image, ``[n, D]`` float32 on the
    CPU, in ``files`` order (from the cache where it is current, computed and cached otherwise),
    and the backbone's token count ``N``.

    :param backbone: the frozen backbone (a :class:`grefine_core.ClipBackbone`).
    :param files: the image files.
    :param compat: the PQ token normalisation (``"paper"`` or ``"reference"``).
    :param image_settings: the configuration's ``image`` limits (``load_image``).
    :param cache_file: where the cache lives (``None``: no cache).
    :param batch_size: images per forward.
    :param identity: :func:`backbone_identity` when already computed.
    """
    import torch
    from tqdm import tqdm

    from grefine_core.imageio import load_image

    key = cache_key(identity or backbone_identity(backbone), compat, image_settings)
    entries, n_tokens = _load_cache(cache_file, key) if cache_file is not None else ({}, 0)
    wanted = [str(Path(f).resolve()) for f in files]
    stamps = {p: _stamp(Path(p)) for p in wanted}
    todo = [p for p in dict.fromkeys(wanted) if entries.get(p, (None,))[0] != stamps[p]]
    if todo:
        log.info("computing the image features of %d of %d images", len(todo), len(wanted))
        step = max(1, int(batch_size))
        unsaved, last_save = 0, time.monotonic()
        with tqdm(total=len(todo), desc="image features", unit="img", disable=None) as bar:
            for i in range(0, len(todo), step):
                chunk = todo[i : i + step]
                pils = [load_image(p, image_settings)[0] for p in chunk]
                with torch.inference_mode():
                    feats, n_tokens = class_tokens(backbone, pils, compat)
                for p, f in zip(chunk, feats, strict=True):
                    entries[p] = (stamps[p], f.clone())
                unsaved += len(chunk)
                bar.update(len(chunk))
                due = time.monotonic() - last_save > SAVE_EVERY_SECONDS
                if cache_file is not None and (unsaved >= SAVE_EVERY_IMAGES or due):
                    _save_cache(cache_file, key, entries, n_tokens)
                    unsaved, last_save = 0, time.monotonic()
        if cache_file is not None and unsaved:
            _save_cache(cache_file, key, entries, n_tokens)
    if not wanted:
        raise ValueError("no images to encode")
    return torch.stack([entries[p][1] for p in wanted]).float(), n_tokens
