"""Stage-1 strength from quality (docs/refiners.md): monotone, clamped, literal and fixed modes."""

from __future__ import annotations

import numpy as np
import pytest
from grefine_sdxl.settings import SDXLSettings
from grefine_sdxl.strength import (
    MIN_STRENGTH,
    combined_quality,
    scheduled_steps,
    stage1_strength,
)

from grefine_core.config import load_config
from grefine_core.errors import InputError


def test_quality_mode_is_monotone_decreasing_and_hits_its_ends():
    qs = np.linspace(0, 1, 101)
    s = [stage1_strength(q, "quality", 0.3, 0.9) for q in qs]
    assert all(a >= b for a, b in zip(s, s[1:], strict=False))
    assert s[0] == pytest.approx(0.9) and s[-1] == pytest.approx(0.3)
    assert stage1_strength(0.5) == pytest.approx(0.6)  # defaults 0.3 / 0.9


@pytest.mark.parametrize("q", [-5.0, -0.1, 1.2, 7.0])
def test_quality_outside_unit_interval_is_clamped(q):
    s = stage1_strength(q, "quality", 0.2, 0.8)
    assert s == pytest.approx(0.8 if q < 0 else 0.2)
    assert 0.0 <= stage1_strength(q, "literal") <= 1.0


def test_literal_and_fixed_modes():
    assert stage1_strength(0.37, "literal") == pytest.approx(0.37)
    assert stage1_strength(0.37, "fixed", fixed=0.9) == 0.9
    assert stage1_strength(0.0, "fixed", fixed=0.5) == 0.5
    # literal is the opposite direction: better images get *stronger* edits (ablation only)
    assert stage1_strength(0.8, "literal") > stage1_strength(0.2, "literal")


def test_bad_inputs_are_named():
    with pytest.raises(InputError, match="q must be a finite"):
        stage1_strength(float("nan"))
    with pytest.raises(InputError, match="strength_mode 'gentle'"):
        stage1_strength(0.5, "gentle")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="a must be a finite"):
        combined_quality(0.5, float("inf"))


def test_combined_quality_drops_disabled_terms():
    assert combined_quality(0.2, 0.6) == pytest.approx(0.4)
    assert combined_quality(0.2, None) == pytest.approx(0.2)  # AQ disabled: q = p
    assert combined_quality(None, 0.6) == pytest.approx(0.6)  # PQ disabled (neutral): q = a
    assert combined_quality(None, None) == 1.0
    assert combined_quality(1.5, -1.0) == pytest.approx(0.5)  # each term clamped first


@pytest.mark.parametrize(
    ("steps", "strength", "expected"),
    [
        (10, 0.9, (10, 9)),
        (10, 0.3, (10, 3)),
        (10, 1.0, (10, 10)),
        (4, 0.2, (5, 1)),
        (1, 0.5, (2, 1)),
    ],
)
def test_scheduled_steps_always_run_at_least_one(steps, strength, expected):
    assert scheduled_steps(steps, strength) == expected


def test_scheduled_steps_rejects_a_vanishing_strength():
    with pytest.raises(InputError, match="strength must be in"):
        scheduled_steps(10, MIN_STRENGTH / 2)
    n, run = scheduled_steps(10, MIN_STRENGTH)
    assert run == 1 and n <= 1001


def test_settings_check_strength_bounds_and_presets_validate():
    with pytest.raises(ValueError, match="strength_min"):
        SDXLSettings(strength_min=0.8, strength_max=0.4)
    with pytest.raises(ValueError, match="stepz"):
        SDXLSettings.model_validate({"stepz": 3})
    for preset in ("paper", "reference", "tiny"):
        SDXLSettings.model_validate(load_config(preset=preset, environ={}).plugins["sdxl"])
    ref = SDXLSettings.model_validate(load_config(preset="reference", environ={}).plugins["sdxl"])
    assert (ref.strength_mode, ref.strength, ref.steps, ref.emphasis) == (
        "fixed",
        0.9,
        40,
        "suffix",
    )
