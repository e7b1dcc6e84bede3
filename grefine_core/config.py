"""Configuration: pydantic models, presets (TOML files shipped in the package) and overrides.

Precedence, lowest to highest: the preset, a user config file, ``GREFINE_*`` environment variables,
command-line flags. Unknown keys fail loudly everywhere (``extra="forbid"``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from grefine_core.errors import ConfigError
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
    """Stage 1 is skipped for a high-quality image: ``p >= p_bound`` and ``a >= a_bound``.

    (An empty mask skips stage 1 too.) Set a bound above 1 to never skip on scores.
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
    """What ``result.save(dir)`` writes besides the image and JSON."""

    save_maps: bool = True
    overlay_alpha: float = Field(0.5, ge=0.0, le=1.0)


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
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    seed: int = 0
    select: dict[str, str] = Field(
        default_factory=lambda: {
            "perceptual": "clip_pq",
            "parser": "nltk",
            "alignment": "clip_aq",
            "fuser": "mask_paper",
            "stage1": "sdxl",
            "stage2": "pasd",
        }
    )
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
            f"invalid configuration ({source}):\n{format_validation_error(e)}"
        ) from None


def format_validation_error(error: ValidationError) -> str:
    """One line per problem: ``key.path: message (got value)``."""
    lines = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(root)"
        got = item.get("input")
        got_text = f" (got {got!r})" if not isinstance(got, dict) else ""
        lines.append(f"  {loc}: {item['msg']}{got_text}")
    return "\n".join(lines)


def load_config(
    preset: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> GRefineConfig:
    """Build the configuration: preset, then user file, then environment, then ``overrides``.

    :param preset: a shipped preset name (default: ``GREFINE_PRESET``, else the user file's
        ``preset`` key, else ``paper``).
    :param config_file: a user TOML file; may set ``preset`` to start from another preset.
    :param overrides: a nested dict (from CLI flags) applied last.
    :param environ: the environment to read ``GREFINE_*`` from (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    user = read_config_file(config_file) if config_file else {}
    env_data = env_overrides(env)
    name = preset or env_data.get("preset") or user.get("preset") or "paper"
    merged = preset_data(str(name))
    sources = [f"preset {name!r}"]
    for layer, label in (
        (user, f"config file {str(config_file)!r}"),
        (env_data, "GREFINE_* environment variables"),
        (overrides or {}, "command-line flags"),
    ):
        if layer:
            merged = deep_merge(merged, layer)
            sources.append(label)
    if "preset" not in (overrides or {}) and preset:
        merged["preset"] = preset
    return validate_config(merged, " + ".join(sources))
