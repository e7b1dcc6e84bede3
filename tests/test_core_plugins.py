"""Plugin discovery, blocking, selection, settings and the pluggy pitfalls."""

from __future__ import annotations

import importlib.metadata as md
import inspect
import json
import subprocess
import sys

import pytest

from grefine_core import plugins as plugin_module
from grefine_core.config import StrictModel
from grefine_core.errors import ConfigError, PluginError, UsageError
from grefine_core.markers import hookimpl
from grefine_core.pipeline import GRefine
from grefine_core.plugins import PluginHost
from grefine_core.testing import fake_config, fake_plugins, make_test_image

DEFAULT_PLUGINS = {
    "clip": "grefine_clip.plugin",
    "clip_pq": "grefine_quality.clip_pq:plugin",
    "clip_aq": "grefine_quality.clip_aq:plugin",
    "nltk": "grefine_nltk.plugin",
    "spacy": "grefine_spacy.plugin",
    "mask_paper": "grefine_masks.paper_plugin",
    "mask_reference": "grefine_masks.reference_plugin",
    "sdxl": "grefine_sdxl.plugin",
    "pasd": "grefine_pasd.plugin",
    "onnx": "grefine_onnx.plugin",
    "onnx_pq": "grefine_quality.onnx_pq:plugin",
    "onnx_aq": "grefine_quality.onnx_aq:plugin",
    "metrics": "grefine_metrics.plugin",
}


def test_default_plugins_come_from_the_entry_point_group():
    eps = {ep.name: ep.value for ep in md.entry_points(group="grefine")}
    for name, module in DEFAULT_PLUGINS.items():
        assert eps.get(name) == module


def test_every_default_plugin_loads_strictly_and_passes_check_pending():
    host = PluginHost(strict=True)  # raises on any import error or unknown hook name
    for name in DEFAULT_PLUGINS:
        info = host.infos[name]
        assert info.status == "loaded", (name, info.reason)
        assert info.source == "builtin" and info.version
        assert info.hooks, f"plugin {name} implements no hook"


def test_no_hookimpl_has_parameters_with_defaults():
    host = PluginHost(extra_plugins=fake_plugins())
    checked = 0
    for name, plugin in host.pm.list_name_plugin():
        for caller in host.pm.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                params = inspect.signature(impl.function).parameters.values()
                with_default = [p.name for p in params if p.default is not inspect.Parameter.empty]
                assert not with_default, f"{name}.{caller.name} has defaults: {with_default}"
                checked += 1
    assert checked > 10


@pytest.mark.parametrize("name", sorted(DEFAULT_PLUGINS))
def test_disabled_plugin_module_is_never_imported(name):
    code = (
        "import sys, json\n"
        "from grefine_core.plugins import PluginHost\n"
        f"h = PluginHost(disable=[{name!r}])\n"
        f"print(json.dumps([h.infos[{name!r}].status, {DEFAULT_PLUGINS[name].split(':')[0]!r} in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    status, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert status == "disabled" and imported is False


@pytest.mark.parametrize("name", sorted(DEFAULT_PLUGINS))
def test_plugin_modules_import_without_torch(name):
    code = f"import sys, importlib; importlib.import_module({DEFAULT_PLUGINS[name].split(':')[0]!r}); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_import_grefine_core_does_not_import_torch():
    code = "import sys, grefine_core, grefine_core.app.cli, grefine_core.pipeline, grefine_core.testing; print(sorted(m for m in ('torch', 'diffusers', 'spacy', 'onnxruntime', 'open_clip') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_names_in_disable_and_select_list_the_valid_ones():
    with pytest.raises(
        UsageError, match=r"unknown plugin 'nltkk' in disable; known plugins: .*nltk"
    ):
        PluginHost(disable=["nltkk"])
    cfg = fake_config(select={"parser": "spacyy"})
    with pytest.raises(UsageError, match=r"unknown plugin 'spacyy' in select; known plugins:"):
        GRefine(cfg, extra_plugins=fake_plugins())


def test_selecting_a_plugin_for_a_slot_it_does_not_fill():
    cfg = fake_config(select={"stage2": "fake_parser"})
    with pytest.raises(
        UsageError,
        match=r"plugin 'fake_parser' does not implement slot 'stage2'; plugins that do: .*fake_stage2",
    ):
        GRefine(cfg, extra_plugins=fake_plugins())


def _fake_eps(monkeypatch, extra):
    real = plugin_module._entry_points()
    monkeypatch.setattr(
        plugin_module, "_entry_points", lambda: sorted([*real, *extra], key=lambda e: e.name)
    )


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(monkeypatch, caplog):
    broken = md.EntryPoint("broken", "no_such_module_xyz.plugin", "grefine")
    _fake_eps(monkeypatch, [broken])
    with caplog.at_level("WARNING"):
        host = PluginHost(extra_plugins=fake_plugins())
    info = host.infos["broken"]
    assert info.status == "failed" and "No module named 'no_such_module_xyz'" in info.reason
    assert "plugin 'broken' (no_such_module_xyz.plugin) failed to import" in caplog.text
    with pytest.raises(
        PluginError, match=r"plugin 'broken' \(no_such_module_xyz.plugin\) failed to import"
    ):
        PluginHost(strict=True, extra_plugins=fake_plugins())
    cfg = fake_config(select={"stage2": "broken"})
    with pytest.raises(
        PluginError, match=r"plugin 'broken' selected for slot 'stage2' failed to load"
    ):
        GRefine(cfg, extra_plugins=fake_plugins())


def test_a_misspelled_hook_fails_check_pending():
    class Typo:
        @hookimpl
        def grefine_perceptual_mapp(self, image, context):
            return None

    with pytest.raises(PluginError, match=r"plugin 'typo' implements a hook that does not exist"):
        PluginHost(extra_plugins={"typo": Typo()})


class _Settings(StrictModel):
    strength: float = 0.5


class _SettingsPlugin:
    seen: list = []

    @hookimpl
    def grefine_settings_models(self):
        return {"mine": _Settings}

    @hookimpl
    def grefine_configure(self, config):
        self.seen.append(config.preset)

    @hookimpl
    def grefine_refine_stage2(self, image, context):
        from grefine_core.types import StageOutput

        return StageOutput(image, {"strength": context.settings("mine").strength})


def test_plugin_settings_are_validated_and_configure_is_called():
    cfg = fake_config(select={"stage2": "mine"})
    cfg.plugins["mine"] = {"strength": 0.25}
    plugin = _SettingsPlugin()
    r = GRefine(cfg, extra_plugins={**fake_plugins(), "mine": plugin}).refine(
        make_test_image(), "a cat"
    )
    assert r.stage("stage2").info == {"strength": 0.25}
    assert plugin.seen[-1] == "tiny"
    cfg.plugins["mine"] = {"strenght": 0.25}
    with pytest.raises(
        ConfigError,
        match=r"invalid settings in \[plugins.mine\] \(read by plugin 'mine'\):\n"
        r"  strenght: Extra inputs are not permitted \(got 0.25\); valid keys: strength",
    ):
        GRefine(cfg, extra_plugins={**fake_plugins(), "mine": _SettingsPlugin()})


def test_two_plugins_declaring_one_section_with_different_models_clash():
    class Other:
        @hookimpl
        def grefine_settings_models(self):
            return {"mine": StrictModel}

    with pytest.raises(ConfigError, match=r"both declare settings section \[plugins.mine\]"):
        PluginHost(extra_plugins={"a": _SettingsPlugin(), "b": Other()}).settings_models()


def test_firstresult_calls_only_the_selected_plugin_not_the_last_registered():
    calls = []

    class A:
        @hookimpl
        def grefine_refine_stage2(self, image, context):
            from grefine_core.types import StageOutput

            calls.append("A")
            return StageOutput(image)

    class B(A):
        @hookimpl
        def grefine_refine_stage2(self, image, context):
            calls.append("B")
            return None

    cfg = fake_config(select={"stage2": "a"})
    GRefine(cfg, extra_plugins={**fake_plugins(), "a": A(), "b": B()}).refine(
        make_test_image(), "x"
    )
    assert calls == ["A"]


@pytest.mark.parametrize(
    "slot, hook",
    [
        ("perceptual", "grefine_perceptual_map"),
        ("parser", "grefine_parse_prompt"),
        ("alignment", "grefine_alignment_map"),
        ("fuser", "grefine_fuse_masks"),
        ("stage1", "grefine_refine_stage1"),
        ("stage2", "grefine_refine_stage2"),
    ],
)
def test_each_slot_hook_is_dispatched_to_the_selected_plugin(slot, hook):
    from grefine_core.plugins import SLOT_HOOKS
    from grefine_core.testing import RaisingPlugin

    assert SLOT_HOOKS[slot] == hook
    cfg = fake_config(select={slot: "spy"})
    pipe = GRefine(
        cfg, extra_plugins={**fake_plugins(), "spy": RaisingPlugin(slot, f"{hook} called")}
    )
    with pytest.raises(
        PluginError, match=rf"plugin 'spy' failed in slot '{slot}': RuntimeError: {hook} called"
    ):
        pipe.refine(make_test_image(), "a cat and a missing")


def test_a_hookimpl_with_a_default_is_rejected_naming_the_plugin():
    from grefine_core.errors import PluginError
    from grefine_core.markers import hookimpl
    from grefine_core.pipeline import GRefine
    from grefine_core.testing import fake_config, fake_plugins

    class Defaulted:
        @hookimpl
        def grefine_refine_stage2(self, image, context=None):
            return None

    with pytest.raises(
        PluginError,
        match=r"plugin 'defaulted': hook grefine_refine_stage2 has "
        r"parameters with default values \(context=None\)",
    ):
        GRefine(fake_config(), extra_plugins={**fake_plugins(), "defaulted": Defaulted()})


def test_plugin_authors_need_one_import():
    import grefine_core

    for name in (
        "hookimpl",
        "StrictModel",
        "RunContext",
        "PerceptualResult",
        "ParsedPrompt",
        "Phrase",
        "AlignmentResult",
        "PhraseAlignment",
        "Emphasis",
        "MaskResult",
        "StageOutput",
        "MissingWeightsError",
        "InputError",
        "ConfigError",
    ):
        assert name in grefine_core.__all__ and getattr(grefine_core, name) is not None, name


def test_a_plugin_adds_hooks_of_its_own_that_other_plugins_implement():
    import types

    from grefine_core.markers import hookimpl, hookspec
    from grefine_core.plugins import PluginHost

    specs = types.ModuleType("my_specs")

    @hookspec
    def my_thing(x):
        """A hook a plugin defines. :returns: anything."""

    specs.my_thing = my_thing

    class Definer:
        @hookimpl
        def grefine_add_hookspecs(self, pluginmanager):
            pluginmanager.add_hookspecs(specs)

    class User:
        @hookimpl
        def my_thing(self, x):
            return x * 2

    # The implementer registers before the definer: still valid once the spec arrives.
    host = PluginHost(extra_plugins={"a_user": User(), "b_definer": Definer()})
    assert host.pm.hook.my_thing(x=21) == [42]
