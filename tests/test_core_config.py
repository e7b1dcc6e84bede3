"""Configuration: presets, precedence, validation errors."""

from __future__ import annotations

import pytest

from grefine_core.config import env_overrides, load_config, preset_names
from grefine_core.errors import ConfigError


def test_shipped_presets_load_and_validate():
    assert {"paper", "reference", "tiny"} <= set(preset_names())
    for name in preset_names():
        cfg = load_config(preset=name, environ={})
        assert cfg.preset == name
    assert load_config(preset="tiny", environ={}).plumbing_only is True
    assert load_config(preset="paper", environ={}).plumbing_only is False


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(
        ConfigError, match=r"unknown preset 'nope'; valid presets: oracle, paper, reference, tiny"
    ):
        load_config(preset="nope", environ={})


def test_precedence_preset_file_env_flags(tmp_path):
    user = tmp_path / "user.toml"
    user.write_text(
        'seed = 5\ndevice = "cpu"\n[plugins.sdxl]\nsteps = 7\n[plugins.pasd]\nsteps = 3\n'
    )
    cfg = load_config(preset="paper", config_file=user, environ={})
    assert cfg.seed == 5 and cfg.plugins["sdxl"]["steps"] == 7
    env = {"GREFINE_SEED": "6", "GREFINE_PLUGINS__SDXL__STEPS": "8"}
    cfg = load_config(preset="paper", config_file=user, environ=env)
    assert cfg.seed == 6 and cfg.plugins["sdxl"]["steps"] == 8 and cfg.plugins["pasd"]["steps"] == 3
    cfg = load_config(preset="paper", config_file=user, environ=env, overrides={"seed": 9})
    assert cfg.seed == 9
    # Untouched preset keys survive the merges.
    assert cfg.plugins["sdxl"]["guidance_scale"] == 7.5


def test_user_file_can_start_from_another_preset(tmp_path):
    user = tmp_path / "mine.toml"
    user.write_text('preset = "reference"\nseed = 1\n')
    cfg = load_config(config_file=user, environ={})
    assert cfg.preset == "reference" and cfg.select["fuser"] == "mask_reference" and cfg.seed == 1


def test_env_overrides_parse_types_and_ignore_unrelated_names():
    env = {
        "GREFINE_DISABLE": "pasd, clip_pq",
        "GREFINE_HQ_SKIP__P_BOUND": "0.5",
        "GREFINE_SHARED_DIR": "/somewhere",
        "OTHER": "x",
    }
    out = env_overrides(env)
    assert out == {"disable": ["pasd", "clip_pq"], "hq_skip": {"p_bound": 0.5}}


@pytest.mark.parametrize(
    "content, message",
    [
        ("sed = 1\n", r"sed: Extra inputs are not permitted"),
        ('device = "tpu"\n', r"device: String should match pattern '\^\(auto\|cpu\|mps\|cuda"),
        ("[select]\nstage3 = 'x'\n", r"unknown slot\(s\) \['stage3'\]"),
        ("seed = [\n", r"is not valid TOML"),
    ],
)
def test_bad_config_files_name_the_problem(tmp_path, content, message):
    f = tmp_path / "bad.toml"
    f.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(preset="paper", config_file=f, environ={})
    assert "bad.toml" in str(info.value) or "config file" in str(info.value)


def test_missing_config_file():
    with pytest.raises(ConfigError, match=r"config file '/no/such.toml' does not exist"):
        load_config(config_file="/no/such.toml", environ={})


def test_disable_adds_up_across_layers_and_a_higher_select_re_enables(tmp_path):
    user = tmp_path / "user.toml"
    user.write_text('disable = ["pasd"]\n[select]\nparser = "spacy"\n')
    cfg = load_config(preset="paper", config_file=user, environ={"GREFINE_DISABLE": "clip_aq"})
    assert cfg.disable == ["pasd", "clip_aq"] and cfg.select["parser"] == "spacy"
    cfg = load_config(
        preset="paper",
        config_file=user,
        environ={"GREFINE_DISABLE": "clip_aq", "GREFINE_SELECT__PARSER": "nltk"},
        overrides={"disable": ["sdxl"], "select": {"stage2": "pasd"}},
    )
    # env beats the file for select.parser; the flags' select re-enables pasd, disabled lower down
    assert cfg.select["parser"] == "nltk" and cfg.disable == ["clip_aq", "sdxl"]
    # a flag beats the environment, which beats the file
    cfg = load_config(
        config_file=user,
        environ={"GREFINE_SELECT__PARSER": "nltk"},
        overrides={"select": {"parser": "spacy"}},
    )
    assert cfg.select["parser"] == "spacy"
    # within one layer, disable wins over select (e.g. a copied preset plus an ablation)
    same = tmp_path / "same.toml"
    same.write_text('disable = ["pasd"]\n[select]\nstage2 = "pasd"\n')
    assert load_config(config_file=same, environ={}).disable == ["pasd"]


def test_preset_choice_follows_the_precedence(tmp_path):
    user = tmp_path / "user.toml"
    user.write_text('preset = "reference"\n')
    assert load_config(config_file=user, environ={}).preset == "reference"
    env = {"GREFINE_PRESET": "tiny"}
    cfg = load_config(config_file=user, environ=env)
    assert cfg.preset == "tiny" and cfg.plumbing_only is True
    cfg = load_config(config_file=user, environ=env, overrides={"preset": "paper"})
    assert cfg.preset == "paper" and cfg.plumbing_only is False
    cfg = load_config(preset="reference", environ=env)
    assert cfg.preset == "reference" and cfg.select["parser"] == "spacy"


@pytest.mark.parametrize(
    "content, message",
    [
        (
            "sed = 1\n",
            r"  sed: Extra inputs are not permitted \(got 1\); valid keys: preset, .*seed",
        ),
        (
            "[hq_skip]\np_boun = 0.5\n",
            r"  hq_skip.p_boun: Extra inputs are not permitted \(got 0.5\); valid keys: p_bound, a_bound",
        ),
    ],
)
def test_an_unknown_key_lists_the_valid_ones(tmp_path, content, message):
    f = tmp_path / "typo.toml"
    f.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(preset="paper", config_file=f, environ={})


def test_a_misspelt_settings_section_is_an_error_naming_the_known_ones():
    from grefine_core.errors import ConfigError
    from grefine_core.pipeline import GRefine

    cfg = load_config(preset="tiny", overrides={"plugins": {"my_refinr": {"x": 1}}}, environ={})
    with pytest.raises(
        ConfigError,
        match=r"unknown settings section \[plugins\.my_refinr\].*known "
        r"sections: .*sdxl",
    ):
        GRefine(cfg)


def test_sections_of_installed_but_disabled_plugins_stay_accepted():
    from grefine_core.pipeline import GRefine
    from grefine_core.plugins import installed_sections

    assert {"pasd", "sdxl", "clip", "metrics", "spacy"} <= installed_sections()
    cfg = load_config(
        preset="tiny",
        overrides={"disable": ["pasd"], "plugins": {"pasd": {"steps": 3}}},
        environ={},
    )
    g = GRefine(cfg)  # pasd is never imported, yet its section is known
    assert g.slot_plugin("stage2") is None
