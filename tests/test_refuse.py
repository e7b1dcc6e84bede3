"""Re-fusing a result's maps with new fuser settings (grefine_core.app.refuse): the mask follows
the settings, the maps are not recomputed, bad settings are named. The real ``mask_paper`` fuser
on the fake indicators' maps (no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from grefine_core.app.refuse import fuser_settings, refuse, with_mask
from grefine_core.errors import ConfigError, UsageError
from grefine_core.markers import hookimpl
from grefine_core.pipeline import GRefine
from grefine_core.testing import FakePerceptual, fake_config, fake_plugins, make_test_image

PROMPT = "a red cat and a missing"


def pipeline(**select):
    return GRefine(
        fake_config(select={"fuser": "mask_paper", **select}), extra_plugins=fake_plugins()
    )


def test_the_default_settings_give_the_runs_own_mask_and_tau_moves_it():
    g = pipeline()
    result = g.assess(make_test_image(), PROMPT)
    same = refuse(g, result)
    assert np.array_equal(same.binary, result.mask.binary)
    assert np.allclose(same.soft, result.mask.soft)
    fractions = [refuse(g, result, tau=t, dilate_px=0).fraction for t in (0.1, 0.5, 0.9)]
    # M = Bi(1 - P + A_defect) at tau: a higher tau marks fewer pixels
    assert fractions[0] > fractions[1] > fractions[2]
    wider = refuse(g, result, dilate_px=12).fraction
    assert wider > refuse(g, result, dilate_px=0).fraction
    assert g.plugin_settings["mask_paper"].tau == 0.5  # the pipeline's own settings unchanged


class CountingPQ(FakePerceptual):
    calls = 0

    @hookimpl
    def grefine_perceptual_map(self, image, context):
        CountingPQ.calls += 1
        return super().grefine_perceptual_map(image, context)


def test_no_map_is_recomputed():
    plugins = {**fake_plugins(), "counting_pq": CountingPQ()}
    cfg = fake_config(select={"fuser": "mask_paper", "perceptual": "counting_pq"})
    g = GRefine(cfg, extra_plugins=plugins)
    result = g.assess(make_test_image(), PROMPT)
    assert CountingPQ.calls == 1
    for tau in (0.2, 0.4, 0.6):
        refuse(g, result, tau=tau)
    assert CountingPQ.calls == 1


def test_with_mask_replaces_only_the_mask():
    g = pipeline()
    result = g.assess(make_test_image(), PROMPT)
    mask = refuse(g, result, tau=0.9)
    other = with_mask(result, mask)
    assert other.mask is mask and result.mask is not mask and other.P is result.P


def test_bad_settings_and_no_fuser_are_named():
    g = pipeline()
    result = g.assess(make_test_image(), PROMPT)
    with pytest.raises(ConfigError, match=r"\[plugins.mask_paper\].*tau"):
        refuse(g, result, tau=1.5)
    with pytest.raises(ConfigError, match=r"\[plugins.mask_paper\].*nonsense"):
        refuse(g, result, nonsense=1)
    assert fuser_settings(g)[0] == "mask_paper"
    none = pipeline(fuser="none")
    with pytest.raises(UsageError, match="no fuser is active"):
        refuse(none, none.assess(make_test_image(), PROMPT))
