"""Configuration: pydantic models, presets (TOML files shipped in the package) and overrides.

Precedence, lowest to highest: the preset, a user config file, ``GREFINE_*`` environment variables,
command-line flags. Unknown keys fail loudly everywhere (``extra="forbid"``). ``disable`` lists add
up across the layers (see :func:`load_config`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from grefine_core.errors import ConfigError
from grefine_core.placement import DEVICE_PATTERN
from grefine_core.types import SLOTS

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ENV_PREFIX = "GREFINE_"


class StrictModel(BaseModel):
    """Base for every settings model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HQSkipSettings(StrictModel):
    """The high-quality policy (Table 1, "HQ optimisation: zero"): an image with
    ``p >= p_bound`` and ``a >= a_bound`` and no alignment defect is returned pixel-identical to
    the input; neither stage hook is called and the report says why. The check runs before the
    empty-mask test; an empty mask on an image that is not high quality skips stage 1 only.
    A skipped indicator counts as perfect (no PQ: p = 1; no AQ: a = 1 and no defect). Set a
    bound above 1 to always refine.
    """

    p_bound: float = Field(0.95, ge=0.0)
    a_bound: float = Field(0.95, ge=0.0)


class ImageSettings(StrictModel):
    """Input-image limits. Larger images are downscaled (with a message), never loaded blindly."""

    max_side: int = Field(
        4096, ge=64, description="longest side after loading; larger is downscaled"
    )
    max_pixels_hard: int = Field(
        400_000_000, ge=1, description="images with more pixels are refused before decoding"
    )


class OutputSettings(StrictModel):
    """What ``result.save(dir)`` writes besides the image and JSON.

    ``maps``: ``"png"`` (default) writes ``<stem>_maps/`` with the overlay PNGs, the mask PNGs,
    ``overview.png`` and every map as float32 in one ``maps.npz``; ``"all"`` adds each map as a
    float ``.npy``; ``"none"`` writes no maps folder (docs/outputs.md). It replaces the old
    ``save_maps``: ``save_maps = true`` is now ``maps = "all"``, ``false`` is ``"none"``.
    """

    maps: Literal["all", "png", "none"] = Field("png", description="maps folder: all|png|none")
    overlay_alpha: float = Field(0.5, ge=0.0, le=1.0)
    strip_metadata: bool = Field(
        False,
        description="write no text chunks into output images (neither the input's nor grefine's "
        "own; only a small marker that grefine wrote the file)",
    )


class GRefineConfig(StrictModel):
    """The whole configuration of a :class:`~grefine_core.pipeline.GRefine`.

    ``select`` maps each slot to the plugin that fills it; ``disable`` lists plugins that are
    blocked before import (their slots are skipped, as in the paper's ablations).
    ``plugins`` holds one table per plugin settings section, validated by the plugin's own model.
    """

    preset: str = "paper"
    description: str = ""
    plumbing_only: bool = Field(
        False, description="random-weight models: outputs prove the plumbing, not image quality"
    )
    notice: str = Field(
        "", description="what this preset's outputs prove and do not prove (printed and reported)"
    )
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="auto, cpu, mps, cuda, cuda:N")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    seed: int = 0
    # Which plugin fills each slot comes from the preset (the core names no plugin).
    select: dict[str, str] = Field(default_factory=dict)
    disable: list[str] = Field(default_factory=list)
    strict_plugins: bool = False
    hq_skip: HQSkipSettings = Field(default_factory=HQSkipSettings)
    image: ImageSettings = Field(default_factory=ImageSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("select")
    @classmethod
    def _known_slots(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(SLOTS))
        if unknown:
            raise ValueError(f"unknown slot(s) {unknown}; valid slots: {', '.join(SLOTS)}")
        return value


def preset_names() -> list[str]:
    """Names of the presets shipped in the package."""
    folder = resources.files("grefine_core") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def preset_data(name: str) -> dict[str, Any]:
    """The raw TOML table of the shipped preset ``name``."""
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(names)}")
    text = (resources.files("grefine_core") / "presets" / f"{name}.toml").read_text("utf-8")
    return tomllib.loads(text)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a user TOML config file, with errors that name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist or is not a file")
    try:
        return tomllib.loads(p.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {e}") from None


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``; tables merge, everything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_scalar(text: str) -> Any:
    """Parse an override value as a TOML value (``3``, ``0.5``, ``true``, ``"x"``, ``[1, 2]``);
    anything that is not valid TOML is taken as a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def dotted_to_nested(key: str, value: Any) -> dict[str, Any]:
    """``"plugins.sdxl.steps", 5`` -> ``{"plugins": {"sdxl": {"steps": 5}}}``."""
    parts = [p for p in key.split(".") if p]
    if not parts:
        raise ConfigError(f"empty configuration key in override {key!r}")
    nested: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    return nested


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Overrides from ``GREFINE_<FIELD>`` variables; ``__`` separates nested keys.

    Only names whose first part is a field of :class:`GRefineConfig` are read, so unrelated
    variables such as ``GREFINE_SHARED_DIR`` are left alone. ``GREFINE_DISABLE`` takes a
    comma-separated list. Example: ``GREFINE_PLUGINS__SDXL__STEPS=4``.
    """
    out: dict[str, Any] = {}
    fields = set(GRefineConfig.model_fields)
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if parts[0] not in fields:
            continue
        if parts == ["disable"]:
            value: Any = [s.strip() for s in raw.split(",") if s.strip()]
        else:
            value = parse_scalar(raw)
        out = deep_merge(out, dotted_to_nested(".".join(parts), value))
    return out


def validate_config(data: Mapping[str, Any], source: str) -> GRefineConfig:
    """Validate a merged configuration table, with an error that says where it came from."""
    try:
        return GRefineConfig.model_validate(dict(data))
    except ValidationError as e:
        raise ConfigError(
            f"invalid configuration ({source}):\n{format_validation_error(e, GRefineConfig)}"
        ) from None


def _model_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class found by following ``loc`` through ``model``'s fields."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = field.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def format_validation_error(error: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line per problem: ``key.path: message (got value)``.

    :param model: the model that was validated; when given, an unknown key's line lists the valid
        keys of the table it appeared in.
    """
    lines = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(root)"
        got = item.get("input")
        got_text = f" (got {got!r})" if not isinstance(got, dict) else ""
        valid = ""
        if item["type"] == "extra_forbidden":
            owner = _model_at(model, tuple(item["loc"][:-1]))
            if owner is not None:
                valid = f"; valid keys: {', '.join(owner.model_fields)}"
        lines.append(f"  {loc}: {item['msg']}{got_text}{valid}")
    return "\n".join(lines)


def _layered_disable(layers: list[Mapping[str, Any]]) -> list[str] | None:
    """``disable`` across layers, lowest first: each layer adds its plugins, and a plugin that a
    layer names in ``select`` is re-enabled if only a *lower* layer disabled it.

    ``None`` when a layer's ``disable`` is not a list of names (validation then reports it).
    """
    disabled: list[str] = []
    for layer in layers:
        select = layer.get("select")
        if isinstance(select, Mapping):
            chosen = {v for v in select.values() if isinstance(v, str)}
            disabled = [n for n in disabled if n not in chosen]
        names = layer.get("disable", [])
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            return None
        disabled += [n for n in names if n not in disabled]
    return disabled


def load_config(
    preset: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> GRefineConfig:
    """Build the configuration: preset, then user file, then environment, then ``overrides``.

    Tables merge key by key and a higher layer's value replaces a lower one's, except ``disable``:
    the layers' lists add up, and naming a plugin in ``select`` re-enables it when a lower layer
    disabled it (within one layer, ``disable`` wins).

    :param preset: a shipped preset name (default: ``overrides["preset"]``, else
        ``GREFINE_PRESET``, else the user file's ``preset`` key, else ``paper``).
    :param config_file: a user TOML file; may set ``preset`` to start from another preset.
    :param overrides: a nested dict (from CLI flags) applied last.
    :param environ: the environment to read ``GREFINE_*`` from (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    flags = dict(overrides or {})
    user = read_config_file(config_file) if config_file else {}
    env_data = env_overrides(env)
    name = preset or flags.get("preset") or env_data.get("preset") or user.get("preset") or "paper"
    base = preset_data(str(name))
    merged = base
    sources = [f"preset {name!r}"]
    for layer, label in (
        (user, f"config file {str(config_file)!r}"),
        (env_data, "GREFINE_* environment variables"),
        (flags, "command-line flags"),
    ):
        if layer:
            merged = deep_merge(merged, layer)
            sources.append(label)
    disable = _layered_disable([base, user, env_data, flags])
    if disable is not None:
        merged["disable"] = disable
    merged["preset"] = str(name)
    return validate_config(merged, " + ".join(sources))
