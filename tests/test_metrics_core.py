"""The Metric type, the registry and the metrics plugin's hook."""

from __future__ import annotations

import inspect
import math
import subprocess
import sys

import pluggy
import pytest
from grefine_metrics.registry import Metric, MetricRegistry

from grefine_core import hookspecs
from grefine_core.errors import PluginError, UsageError
from grefine_core.markers import PROJECT_NAME


def _const(value: float):
    return lambda before, after, mask, prompt: value


def test_metric_validates_name_and_needs():
    with pytest.raises(ValueError, match="unknown needs"):
        Metric("x", _const(1.0), needs=frozenset({"depth"}))
    with pytest.raises(ValueError, match="must be non-empty"):
        Metric("bad name!", _const(1.0))


def test_metric_direction_and_before():
    up = Metric("up", _const(1.0), higher_is_better=True)
    down = Metric("down", _const(1.0), higher_is_better=False)
    info = Metric("info", _const(1.0), higher_is_better=None)
    ref = Metric("ref", _const(1.0), needs=frozenset({"reference"}))
    assert up.is_worse(0.5, 1.0) and not up.is_worse(1.5, 1.0)
    assert down.is_worse(1.5, 1.0) and not down.is_worse(0.5, 1.0)
    assert not info.is_worse(0.0, 100.0)
    assert not up.is_worse(1.0 + 1e-12, 1.0) and not up.is_worse(1.0 - 1e-12, 1.0)  # tolerance
    assert not up.is_worse(math.inf, math.inf) and not up.is_worse(math.nan, 1.0)
    assert up.has_before and not ref.has_before
    assert up.header == "up ↑" and down.header == "down ↓" and info.header == "info"
    assert up.best([1.0, math.nan, 3.0]) == 3.0 and down.best([1.0, 3.0]) == 1.0
    assert info.best([1.0]) is None
    capped = Metric("psnr", _const(1.0), cap=100.0)
    assert capped.capped(math.inf) == 100.0 and capped.capped(30.0) == 30.0


def test_available_reports_reason_and_survives_a_broken_check():
    ok = Metric("a", _const(1.0))
    missing = Metric("b", _const(1.0), check=lambda: (False, "pip install b"))

    def broken():
        raise RuntimeError("boom")

    assert ok.available() == (True, "")
    assert missing.available() == (False, "pip install b")
    flag, reason = Metric("c", _const(1.0), check=broken).available()
    assert not flag and "RuntimeError: boom" in reason


def test_registry_select_and_errors():
    reg = MetricRegistry.from_hook_results(
        [[Metric("a", _const(1.0))], None, [Metric("b", _const(2.0))]]
    )
    assert reg.names() == ["a", "b"] and len(reg) == 2 and "a" in reg
    assert [m.name for m in reg.select(["b", "a", "b"])] == ["b", "a"]
    with pytest.raises(UsageError, match=r"unknown metrics 'x', 'y'; valid metrics: a, b"):
        reg.select(["a", "x", "y"])
    with pytest.raises(UsageError, match="unknown metric 'z'; valid metrics: a, b"):
        reg.get("z")
    with pytest.raises(PluginError, match="two plugins register a metric named 'a'"):
        reg.add(Metric("a", _const(3.0)))
    with pytest.raises(PluginError, match="got an item of type str"):
        MetricRegistry.from_hook_results([["not a metric"]])
    ok, skipped = reg.split_available(
        [reg.get("a"), Metric("c", _const(0.0), check=lambda: (False, "why"))]
    )
    assert [m.name for m in ok] == ["a"] and skipped == {"c": "why"}


def test_plugin_registers_offline_metrics_through_the_hook():
    import grefine_metrics.plugin as plugin

    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.hook.grefine_add_hookspecs.call_historic(kwargs={"pluginmanager": pm})
    pm.register(plugin, name="metrics")  # adds the evaluation's own grefine_metrics hook
    pm.check_pending()
    from grefine_core.config import GRefineConfig

    reg = MetricRegistry.from_hook(pm.hook, GRefineConfig())
    for name in (
        "psnr_outside",
        "ssim_outside",
        "color_shift",
        "seam_strength",
        "masked_fraction",
        "brisque",
        "niqe",
    ):
        assert name in reg
        assert reg.get(name).available() == (True, ""), name
    assert reg.get("psnr_outside").needs == {"reference", "mask"}
    assert reg.get("brisque").higher_is_better is False
    models = pm.hook.grefine_settings_models()
    assert any("metrics" in m for m in models)


def test_plugin_hookimpls_have_no_defaults_and_settings_apply():
    import grefine_metrics.plugin as plugin

    from grefine_core.config import GRefineConfig

    for name in ("grefine_settings_models", "grefine_metrics"):
        sig = inspect.signature(getattr(plugin, name))
        assert all(p.default is inspect.Parameter.empty for p in sig.parameters.values())
    five = GRefineConfig(plugins={"metrics": {"seam_band_px": 5}})
    seam = next(m for m in plugin.grefine_metrics(five) if m.name == "seam_strength")
    assert "5 px" in seam.description
    # Two configurations side by side never overwrite each other (no module state).
    default = next(m for m in plugin.grefine_metrics(GRefineConfig()) if m.name == "seam_strength")
    assert "5 px" not in default.description
    assert (
        "5 px"
        in next(m for m in plugin.grefine_metrics(five) if m.name == "seam_strength").description
    )
    assert not hasattr(plugin, "_settings") and not hasattr(plugin, "grefine_configure")


def test_importing_the_plugin_and_eval_modules_does_not_import_torch():
    code = (
        "import sys, grefine_metrics.plugin, grefine_metrics.eval_cli, grefine_metrics.evaluate, "
        "grefine_metrics.assess, grefine_metrics.optional, grefine_metrics.registry\n"
        "heavy = [m for m in ('torch', 'open_clip', 'transformers', 'pyiqa', 'cv2', 'skvideo', "
        "'brisque', 'matplotlib.pyplot') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_loading_the_plugin_with_the_others_imports_no_metric_code():
    """Every ``grefine`` command imports all plugin modules: this one must not pull in scipy."""
    code = (
        "import sys, grefine_metrics.plugin\n"
        "print([m for m in ('scipy', 'grefine_metrics.catalog', 'matplotlib', 'torch') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
