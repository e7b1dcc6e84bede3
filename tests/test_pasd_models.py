"""PASD models: fixture parity of the ControlNet + PASD UNet forward, loading rules, RRDB stem."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from diffusers import ControlNetModel, UNet2DConditionModel  # noqa: E402
from grefine_pasd import PASDUNet2DConditionModel, load_pasd_controlnet  # noqa: E402
from grefine_pasd.controlnet import PASDControlNetModel  # noqa: E402
from grefine_pasd.rrdb import RRDB  # noqa: E402
from grefine_pasd.tiny import TINY_CONTROLNET_STEM, TINY_UNET_CONFIG, randomize_  # noqa: E402

from grefine_core.errors import MissingWeightsError  # noqa: E402

N_PACA_PARAMS = 156080  # manifest.json: models.unet.n_paca_params


@pytest.fixture(scope="module")
def fixture_models(pasd_fixture_dir: Path):
    unet = PASDUNet2DConditionModel.from_pretrained(str(pasd_fixture_dir / "models" / "unet"))
    controlnet = load_pasd_controlnet(pasd_fixture_dir / "models" / "controlnet")
    return unet.eval(), controlnet


@pytest.fixture(scope="module")
def inputs(pasd_fixture_dir: Path):
    return safetensors_torch.load_file(str(pasd_fixture_dir / "inputs.safetensors"))


def _forward(unet, controlnet, inputs, scale=1.0, residuals=True):
    with torch.no_grad():
        rgbs, downs, mid = controlnet(
            inputs["fwd_sample"],
            inputs["fwd_timestep"],
            encoder_hidden_states=inputs["prompt_embeds"],
            controlnet_cond=inputs["image01"],
            conditioning_scale=scale,
            return_dict=False,
        )
        kwargs = (
            {"down_block_additional_residuals": downs, "mid_block_additional_residual": mid}
            if residuals
            else {}
        )
        out = unet(
            inputs["fwd_sample"],
            inputs["fwd_timestep"],
            encoder_hidden_states=inputs["prompt_embeds"],
            return_dict=False,
            **kwargs,
        )[0]
    return rgbs, downs, mid, out


def test_forward_matches_reference(fixture_models, inputs, pasd_fixture_dir):
    unet, controlnet = fixture_models
    ref = safetensors_torch.load_file(str(pasd_fixture_dir / "unet_forward.safetensors"))
    rgbs, downs, mid, out = _forward(unet, controlnet, inputs)
    assert len(rgbs) == 3 and len(downs) == 9
    for i, rgb in enumerate(rgbs):
        torch.testing.assert_close(rgb, ref[f"cs1.0.controlnet.rgb{i}"], atol=1e-4, rtol=0)
    for i, down in enumerate(downs):
        torch.testing.assert_close(down, ref[f"cs1.0.controlnet.down{i:02d}"], atol=1e-4, rtol=0)
    torch.testing.assert_close(mid, ref["cs1.0.controlnet.mid"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out, ref["cs1.0.unet.sample"], atol=1e-4, rtol=0)


def test_return_dict_output_has_rgbs(fixture_models, inputs):
    _, controlnet = fixture_models
    with torch.no_grad():
        res = controlnet(
            inputs["fwd_sample"],
            500,
            encoder_hidden_states=inputs["prompt_embeds"],
            controlnet_cond=inputs["image01"],
        )
    assert [tuple(r.shape[-2:]) for r in res.rgbs] == [(48, 64), (24, 32), (12, 16)]
    assert len(res.down_block_res_samples) == 9


def test_unet_keeps_parent_signature_and_official_layout(pasd_fixture_dir):
    parent = inspect.signature(UNet2DConditionModel.__init__).parameters
    assert list(inspect.signature(PASDUNet2DConditionModel.__init__).parameters) == list(parent)
    config = json.loads((pasd_fixture_dir / "models/unet/config.json").read_text())
    assert config["_class_name"] == "UNet2DConditionModel"
    model = PASDUNet2DConditionModel.from_config(config)
    assert tuple(model.config.block_out_channels) == (16, 32, 32)
    assert model.paca_parameters() == N_PACA_PARAMS
    keys = set(
        safetensors_torch.load_file(
            str(pasd_fixture_dir / "models/unet/diffusion_pytorch_model.safetensors")
        )
    )
    assert set(model.state_dict()) == keys


def test_paca_is_active_and_skipped_without_residuals(fixture_models, inputs, pasd_fixture_dir):
    unet, controlnet = fixture_models
    stock = UNet2DConditionModel.from_pretrained(str(pasd_fixture_dir / "models" / "unet")).eval()
    _, downs, mid, with_paca = _forward(unet, controlnet, inputs)
    with torch.no_grad():
        no_paca = stock(
            inputs["fwd_sample"],
            500,
            encoder_hidden_states=inputs["prompt_embeds"],
            down_block_additional_residuals=downs,
            mid_block_additional_residual=mid,
        ).sample
        plain_stock = stock(inputs["fwd_sample"], 500, inputs["prompt_embeds"]).sample
    assert (with_paca - no_paca).abs().max() > 0.1  # manifest diagnostic: 1.66
    # Without residuals PACA is skipped: exactly the stock UNet.
    *_, plain = _forward(unet, controlnet, inputs, residuals=False)
    torch.testing.assert_close(plain, plain_stock, atol=1e-5, rtol=0)


def test_unet_rejects_half_residuals(fixture_models, inputs):
    unet, controlnet = fixture_models
    _, downs, _, _ = _forward(unet, controlnet, inputs)
    with pytest.raises(ValueError, match="mid_block_additional_residual"):
        unet(
            inputs["fwd_sample"],
            500,
            inputs["prompt_embeds"],
            down_block_additional_residuals=downs,
        )


def test_unet_refuses_plain_sd_unet(tmp_path):
    plain = UNet2DConditionModel(**TINY_UNET_CONFIG)
    plain.save_pretrained(tmp_path / "unet")
    with pytest.raises(ValueError, match="PACA weights are missing"):
        PASDUNet2DConditionModel.from_pretrained(str(tmp_path / "unet"))


def test_controlnet_residuals_equal_stock_controlnet(fixture_models, inputs, pasd_fixture_dir):
    _, controlnet = fixture_models
    config = json.loads((pasd_fixture_dir / "models/controlnet/config.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config.pop("return_rgbs"), config.pop("use_rrdb")
    stock = ControlNetModel.from_config(config)
    state = safetensors_torch.load_file(
        str(pasd_fixture_dir / "models/controlnet/diffusion_pytorch_model.safetensors")
    )
    stock.load_state_dict({k: v for k, v in state.items() if ".to_rgbs." not in k})
    with torch.no_grad():
        downs, mid = stock(
            inputs["fwd_sample"],
            500,
            encoder_hidden_states=inputs["prompt_embeds"],
            controlnet_cond=inputs["image01"],
            conditioning_scale=0.7,
            return_dict=False,
        )
        _, our_downs, our_mid = controlnet(
            inputs["fwd_sample"],
            500,
            encoder_hidden_states=inputs["prompt_embeds"],
            controlnet_cond=inputs["image01"],
            conditioning_scale=0.7,
            return_dict=False,
        )
    for a, b in zip(downs, our_downs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(mid, our_mid, atol=1e-5, rtol=0)


def _tiny_controlnet(**kwargs) -> PASDControlNetModel:
    cfg = {
        k: v
        for k, v in TINY_UNET_CONFIG.items()
        if k not in ("sample_size", "out_channels", "up_block_types")
    }
    model = PASDControlNetModel(
        **cfg, conditioning_embedding_out_channels=TINY_CONTROLNET_STEM, **kwargs
    )
    return randomize_(model, 7).eval()


def _controlnet_out(model, inputs):
    with torch.no_grad():
        return model(
            inputs["fwd_sample"],
            500,
            encoder_hidden_states=inputs["prompt_embeds"],
            controlnet_cond=inputs["image01"],
            return_dict=False,
        )


def test_rrdb_controlnet_roundtrip(tmp_path, inputs):
    model = _tiny_controlnet(use_rrdb=True)
    keys = [k for k in model.state_dict() if ".preprocesser." in k]
    assert "controlnet_cond_embedding.preprocesser.0.rdb1.conv1.weight" in keys
    assert "controlnet_cond_embedding.preprocesser.1.rdb3.conv5.bias" in keys
    model.save_pretrained(tmp_path / "controlnet")
    assert json.loads((tmp_path / "controlnet/config.json").read_text())["use_rrdb"] is True
    loaded = load_pasd_controlnet(tmp_path / "controlnet")
    assert loaded.config.use_rrdb and loaded.config.return_rgbs
    for a, b in zip(
        _controlnet_out(model, inputs)[1], _controlnet_out(loaded, inputs)[1], strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # The stem really changes the result (RRDB is not an identity).
    stem = loaded.controlnet_cond_embedding
    x = torch.randn(1, TINY_CONTROLNET_STEM[0], 8, 8, generator=torch.Generator().manual_seed(0))
    assert (stem.preprocesser(x) - x).abs().max() > 1e-3


def test_loader_refuses_rrdb_mismatch(tmp_path):
    _tiny_controlnet(use_rrdb=True).save_pretrained(tmp_path / "rrdb")
    cfg_path = tmp_path / "rrdb" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["use_rrdb"] = False
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="preprocesser"):
        load_pasd_controlnet(tmp_path / "rrdb")
    # And the reverse: config asks for RRDB, weights have none.
    _tiny_controlnet(use_rrdb=False).save_pretrained(tmp_path / "plain")
    cfg_path = tmp_path / "plain" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["use_rrdb"] = True
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="use_rrdb=True"):
        load_pasd_controlnet(tmp_path / "plain")


def test_return_rgbs_optional_and_inferred(tmp_path, inputs, pasd_fixture_dir):
    model = _tiny_controlnet(return_rgbs=False)
    rgbs, downs, _ = _controlnet_out(model, inputs)
    assert rgbs == () and len(downs) == 9
    # A config without the key: inferred from the weights (the fixture has to_rgbs weights).
    folder = tmp_path / "controlnet"
    shutil.copytree(pasd_fixture_dir / "models" / "controlnet", folder)
    folder.chmod(0o755)
    cfg_path = folder / "config.json"
    cfg_path.chmod(0o644)
    cfg = json.loads(cfg_path.read_text())
    del cfg["return_rgbs"], cfg["use_rrdb"]
    cfg_path.write_text(json.dumps(cfg))
    loaded = load_pasd_controlnet(folder)
    assert loaded.config.return_rgbs is True
    assert len(_controlnet_out(loaded, inputs)[0]) == 3


def test_loader_missing_files(tmp_path):
    with pytest.raises(MissingWeightsError, match="config.json"):
        load_pasd_controlnet(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="diffusion_pytorch_model.safetensors"):
        load_pasd_controlnet(tmp_path)


def test_rrdb_block_shapes():
    block = RRDB(8, 4)
    names = {n for n, _ in block.named_parameters()}
    assert {f"rdb{i}.conv{j}.weight" for i in (1, 2, 3) for j in range(1, 6)} <= names
    assert block.rdb1.conv5.in_channels == 8 + 4 * 4
    x = torch.randn(2, 8, 5, 7)
    assert block(x).shape == x.shape
