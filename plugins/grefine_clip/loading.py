"""Building open_clip CLIP models from OpenAI-format state dicts, files, folders and names.

OpenAI CLIP state-dict key names are identical to open_clip's ``CLIP`` (docs/indicators.md), so one loader
covers OpenAI ``.pt`` archives, open_clip checkpoints and ``.safetensors`` files.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grefine_clip.constants import SURGERY_LAYERS
from grefine_core.errors import InputError, MissingWeightsError, reason_of

log = logging.getLogger("grefine.clip")

#: Keys every OpenAI-format ViT CLIP state dict has (besides the numbered blocks).
REQUIRED_KEYS = (
    "visual.conv1.weight",
    "visual.class_embedding",
    "visual.positional_embedding",
    "visual.ln_pre.weight",
    "visual.ln_post.weight",
    "visual.proj",
    "token_embedding.weight",
    "positional_embedding",
    "ln_final.weight",
    "text_projection",
)
#: Rows of OpenAI CLIP's token table.
OPENAI_VOCAB_SIZE = 49408
#: Keys OpenAI archives carry that are not parameters.
_IGNORED_KEYS = ("input_resolution", "context_length", "vocab_size")
#: File names looked for inside a weights folder, in order.
WEIGHT_FILE_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("constants.pkl") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a CLIP state dict from a ``.safetensors`` file, a torch pickle or an OpenAI TorchScript
    archive (``ViT-B-16.pt``), always on the CPU and without executing pickled code.

    :raises InputError: unreadable or corrupted file (the message names it).
    """
    p = Path(path)
    if not p.is_file():
        raise MissingWeightsError(f"CLIP weights file {str(p)!r} does not exist")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p), device="cpu")
        elif _is_torchscript(p):
            obj = torch.jit.load(str(p), map_location="cpu").state_dict()
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every reader failure means the same to the user
        raise InputError(
            f"cannot read CLIP weights from {str(p)!r} ({reason_of(e)}); expected an "
            "OpenAI/open_clip state dict as .pt/.pth/.bin (torch) or .safetensors"
        ) from None
    return clean_state_dict(obj, str(p))


def clean_state_dict(obj: Any, source: str = "state dict") -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}`` / ``{"model": ...}``, strip ``module.`` prefixes and drop the
    non-parameter entries of OpenAI archives."""
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise InputError(f"{source} is not a non-empty mapping of parameter names to tensors")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        name = str(key)
        if name.startswith("module."):
            name = name[len("module.") :]
        if name in _IGNORED_KEYS:
            continue
        if not isinstance(value, torch.Tensor):
            raise InputError(f"{source}: entry {name!r} is a {type(value).__name__}, not a tensor")
        out[name] = value
    return _densify_token_table(out, source)


def _densify_token_table(sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rebuild ``token_embedding.weight`` from the compact ``token_embedding.rows`` /
    ``token_embedding.values`` pair (used by the shared test fixture): zeros except the stored
    rows, ``OPENAI_VOCAB_SIZE`` rows."""
    if "token_embedding.rows" not in sd and "token_embedding.values" not in sd:
        return sd
    rows = sd.pop("token_embedding.rows", None)
    values = sd.pop("token_embedding.values", None)
    if rows is None or values is None or values.ndim != 2 or rows.shape[0] != values.shape[0]:
        raise InputError(
            f"{source}: compact token table needs 'token_embedding.rows' [n] and "
            "'token_embedding.values' [n, width]"
        )
    vocab = max(OPENAI_VOCAB_SIZE, int(rows.max()) + 1)
    table = torch.zeros((vocab, values.shape[1]), dtype=values.dtype)
    table[rows.long()] = values
    sd["token_embedding.weight"] = table
    return sd


def _count_blocks(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    ids = {
        int(k[len(prefix) :].split(".")[0])
        for k in state_dict
        if k.startswith(prefix) and k[len(prefix) :].split(".")[0].isdigit()
    }
    return len(ids)


def infer_openai_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The architecture of an OpenAI-format ViT CLIP state dict (heads = width / 64, as OpenAI).

    :raises InputError: ResNet CLIPs, missing keys, fewer than 6 vision layers.
    """
    if any(k.startswith("visual.layer1.") for k in state_dict):
        raise InputError(
            "this is a ResNet CLIP state dict; CLIP Surgery here needs a Vision Transformer CLIP "
            "(e.g. OpenAI ViT-B/16)"
        )
    missing = [k for k in REQUIRED_KEYS if k not in state_dict]
    if missing:
        raise InputError(
            f"CLIP state dict is missing {len(missing)} required key(s): {', '.join(missing)} "
            "(expected OpenAI CLIP key names, e.g. 'visual.conv1.weight', 'text_projection')"
        )
    conv = state_dict["visual.conv1.weight"]
    pos = state_dict["visual.positional_embedding"]
    if conv.ndim != 4 or pos.ndim != 2:
        raise InputError(
            f"CLIP state dict: 'visual.conv1.weight' has shape {tuple(conv.shape)} and "
            f"'visual.positional_embedding' {tuple(pos.shape)}; expected 4-D and 2-D"
        )
    grid = round((pos.shape[0] - 1) ** 0.5)
    if grid * grid + 1 != pos.shape[0]:
        raise InputError(
            f"'visual.positional_embedding' has {pos.shape[0]} rows, not 1 + a square grid"
        )
    vision_layers = _count_blocks(state_dict, "visual.transformer.resblocks.")
    if vision_layers < SURGERY_LAYERS:
        raise InputError(
            f"the vision tower has {vision_layers} transformer layers; CLIP Surgery turns the "
            f"last {SURGERY_LAYERS} into dual-path blocks and needs at least {SURGERY_LAYERS}"
        )
    text_layers = _count_blocks(state_dict, "transformer.resblocks.")
    if text_layers < 1:
        raise InputError(
            "CLIP state dict has no text transformer blocks ('transformer.resblocks.N.*')"
        )
    vision_width = int(conv.shape[0])
    text_width = int(state_dict["ln_final.weight"].shape[0])
    return {
        "embed_dim": int(state_dict["text_projection"].shape[1]),
        "vision_width": vision_width,
        "vision_layers": vision_layers,
        "vision_heads": max(1, vision_width // 64),
        "patch_size": int(conv.shape[-1]),
        "image_size": int(conv.shape[-1]) * grid,
        "context_length": int(state_dict["positional_embedding"].shape[0]),
        "vocab_size": int(state_dict["token_embedding.weight"].shape[0]),
        "text_width": text_width,
        "text_heads": max(1, text_width // 64),
        "text_layers": text_layers,
    }


def build_clip(config: Mapping[str, Any], seed: int | None = None) -> nn.Module:
    """An open_clip ``CLIP`` (QuickGELU, float32) of the given architecture, randomly initialised
    (with ``seed`` when given, leaving the global RNG untouched)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(
        layers=config["vision_layers"],
        width=config["vision_width"],
        head_width=config["vision_width"] // config["vision_heads"],
        patch_size=config["patch_size"],
        image_size=config["image_size"],
    )
    text = CLIPTextCfg(
        context_length=config["context_length"],
        vocab_size=config["vocab_size"],
        width=config["text_width"],
        heads=config["text_heads"],
        layers=config["text_layers"],
    )
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = CLIP(config["embed_dim"], vision_cfg=vision, text_cfg=text, quick_gelu=True)
    return model.float().eval()


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state_dict`` into ``model`` after checking every key and shape (clear errors)."""
    expected = model.state_dict()
    sd = dict(state_dict)
    if "logit_scale" in expected and "logit_scale" not in sd:
        sd["logit_scale"] = expected["logit_scale"]
    if "logit_scale" in sd and sd["logit_scale"].shape != expected["logit_scale"].shape:
        sd["logit_scale"] = sd["logit_scale"].reshape(expected["logit_scale"].shape)
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = [
        f"{k}: got {tuple(sd[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}")
    if wrong:
        problems.append(f"mis-shaped keys ({len(wrong)}): {'; '.join(wrong[:8])}")
    if problems:
        raise InputError(
            "CLIP state dict does not match the architecture it describes: " + " | ".join(problems)
        )
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)


def clip_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """An open_clip ``CLIP`` (float32, eval) holding ``state_dict`` (OpenAI key names)."""
    sd = clean_state_dict(state_dict)
    model = build_clip(infer_openai_config(sd), seed=0)
    load_into(model, sd)
    return model


def find_weights_file(folder: str | Path) -> Path:
    """The single CLIP weights file inside ``folder``."""
    d = Path(folder)
    for name in WEIGHT_FILE_NAMES:
        if (d / name).is_file():
            return d / name
    found = sorted(p for p in d.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if len(found) == 1:
        return found[0]
    if not found:
        raise MissingWeightsError(
            f"no CLIP weights in folder {str(d)!r}: expected one of {', '.join(WEIGHT_FILE_NAMES)} "
            "or a single .pt/.pth/.bin/.safetensors file (e.g. OpenAI's ViT-B-16.pt)"
        )
    raise InputError(
        f"folder {str(d)!r} holds several weight files ({', '.join(p.name for p in found)}); "
        "name the file instead"
    )


def open_clip_model(name: str, pretrained: str, cache_dir: str | None = None) -> nn.Module:
    """Create an open_clip model by name and pretrained tag (or weights file), offline-aware.

    ``openai`` weights always get QuickGELU (open_clip 3.x builds GELU for ``ViT-B-16`` +
    ``openai`` and only warns).

    :raises ConfigError: unknown model name or tag.
    :raises MissingWeightsError: the weights are not cached and cannot be downloaded.
    """
    import open_clip

    from grefine_core.errors import ConfigError

    models = open_clip.list_models()
    if name not in models:
        close = [m for m in models if m.lower().startswith(name.lower()[:5])][:8]
        raise ConfigError(
            f"unknown open_clip model {name!r} and no such file or folder; valid names include "
            f"{', '.join(close or models[:8])} (see open_clip.list_models()), 'tiny', or a path "
            "to an OpenAI-format .pt/.safetensors file or folder"
        )
    is_file = bool(pretrained) and Path(pretrained).expanduser().is_file()
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained and not is_file and pretrained not in tags:
        raise ConfigError(
            f"unknown pretrained tag {pretrained!r} for open_clip model {name!r}; valid tags: "
            f"{', '.join(tags) or '(none)'}, or a path to a weights file"
        )
    if pretrained and not is_file and not _weights_reachable(name, pretrained, cache_dir):
        raise MissingWeightsError(
            _missing_weights_message(name, pretrained, cache_dir, "not cached")
        )
    # open_clip logs its own ERROR on the root logger before raising; our message says more.
    quiet = _DropOpenClipErrors()
    logging.getLogger().addFilter(quiet)
    # Cached weights load from their file: open_clip would otherwise ask the hub first.
    cached = None if is_file or not pretrained else cached_weights(name, pretrained, cache_dir)
    if is_file:
        source: str | None = str(Path(pretrained).expanduser())
    else:
        source = cached or pretrained or None
    try:
        model = open_clip.create_model(
            name,
            pretrained=source,
            force_quick_gelu=pretrained == "openai",
            cache_dir=cache_dir or None,
            require_pretrained=bool(pretrained),
        )
    except Exception as e:  # noqa: BLE001 - network/hub/file errors all mean "weights not here"
        reason = reason_of(e)[:200]
        raise MissingWeightsError(
            _missing_weights_message(name, pretrained, cache_dir, reason)
        ) from None
    finally:
        logging.getLogger().removeFilter(quiet)
    return model.float().eval()


class _DropOpenClipErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not ("open_clip" in record.pathname and record.levelno >= logging.ERROR)


def _missing_weights_message(name: str, pretrained: str, cache_dir: str | None, reason: str) -> str:
    where = cache_dir or "~/.cache/huggingface/hub (or $HF_HOME)"
    return (
        f"CLIP weights for open_clip model {name!r} tag {pretrained!r} are not available offline "
        f'({reason}). On a machine with network run `python -c "import open_clip; '
        f"open_clip.create_model({name!r}, pretrained={pretrained!r}, "
        f"cache_dir={cache_dir or None!r})\"` to cache them in {where}, or download OpenAI's "
        "ViT-B-16.pt and set [plugins.clip] model to its path"
    )


def _hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # noqa: BLE001
        return False


def cached_weights(name: str, pretrained: str, cache_dir: str | None) -> str | None:
    """The local Hugging Face cache's copy of an open_clip tag's weights, found without the
    network (``None`` when the tag has no hub file or it is not cached)."""
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(name, pretrained) or {}
    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    from huggingface_hub import try_to_load_from_cache

    # open_clip's convention: "org/model/" (default file name) or "org/model/file".
    repo, filename = os.path.split(hub)
    filename = filename or "open_clip_pytorch_model.bin"
    candidates = [filename]
    if filename == "open_clip_pytorch_model.bin":
        candidates.insert(0, "open_clip_model.safetensors")
    elif filename.endswith((".bin", ".pth")):
        candidates.insert(0, filename[:-4] + ".safetensors")
    for f in candidates:
        found = try_to_load_from_cache(repo, f, cache_dir=cache_dir or None)
        if isinstance(found, str):
            return found
    return None


def _weights_reachable(name: str, pretrained: str, cache_dir: str | None) -> bool:
    """False when the Hugging Face hub is offline and the tag's weights are not in its cache
    (so a missing download fails at once instead of after building the model)."""
    from open_clip.pretrained import get_pretrained_cfg

    hub = (get_pretrained_cfg(name, pretrained) or {}).get("hf_hub", "")
    if not hub or not _hub_offline():
        return True
    return cached_weights(name, pretrained, cache_dir) is not None
