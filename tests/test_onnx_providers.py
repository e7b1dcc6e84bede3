"""ONNX Runtime sessions: provider order, fallbacks with logged warnings, session options."""

from __future__ import annotations

import logging

import pytest
from conftest import needs_onnxruntime_gpu_build

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def identity_path(tmp_path_factory):
    from grefine_onnx.providers import _identity_model

    path = tmp_path_factory.mktemp("onnx_probe") / "identity.onnx"
    path.write_bytes(_identity_model())
    return path


@needs_onnxruntime_gpu_build
def test_gpu_providers_without_a_driver_fall_back_to_cpu_with_a_warning(monkeypatch, caplog):
    import grefine_onnx.providers as providers

    monkeypatch.setattr(providers, "nvidia_driver_present", lambda: False)
    with caplog.at_level(logging.WARNING, logger="grefine.onnx"):
        working = providers.probe_providers(providers.SessionConfig())
    assert working == ("cpu",)
    for name in ("'tensorrt'", "'cuda'"):
        assert f"execution provider {name} requested but no NVIDIA driver" in caplog.text


def test_provider_missing_from_the_build_is_reported(monkeypatch, caplog):
    import grefine_onnx.providers as providers

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    config = providers.SessionConfig(providers=("tensorrt", "cpu"))
    with caplog.at_level(logging.WARNING, logger="grefine.onnx"):
        plan = providers.provider_plan(config)
    assert plan == [("CPUExecutionProvider", {})]
    assert (
        "'tensorrt' (TensorrtExecutionProvider) is not part of this onnxruntime build"
        in caplog.text
    )


@needs_onnxruntime_gpu_build
def test_cuda_provider_tf32_follows_the_setting(monkeypatch):
    """ORT's CUDA provider defaults to TF32; grefine asks for full float32 unless told."""
    import grefine_onnx.providers as providers
    from grefine_onnx.settings import OnnxSettings

    monkeypatch.setattr(providers, "nvidia_driver_present", lambda: True)
    for setting, expected in ((False, 0), (True, 1)):
        config = providers.SessionConfig.from_settings(
            OnnxSettings(providers=["cuda", "cpu"], cuda_tf32=setting, device_id=2)
        )
        plan = providers.provider_plan(config)
        assert plan[0] == ("CUDAExecutionProvider", {"device_id": 2, "use_tf32": expected})
        assert plan[-1] == ("CPUExecutionProvider", {})


@needs_onnxruntime_gpu_build
def test_cpu_is_always_the_last_resort(monkeypatch, caplog):
    import grefine_onnx.providers as providers

    monkeypatch.setattr(providers, "nvidia_driver_present", lambda: False)
    with caplog.at_level(logging.WARNING, logger="grefine.onnx"):
        plan = providers.provider_plan(providers.SessionConfig(providers=("cuda",)))
    assert [name for name, _ in plan] == ["CPUExecutionProvider"]
    assert "'cuda' requested" in caplog.text


@needs_onnxruntime_gpu_build
def test_session_reports_a_provider_ort_could_not_start(identity_path, caplog):
    """No monkeypatching: ask ORT itself for CUDA; on a machine without a GPU the session runs on
    the CPU and the lost provider is reported (detected from session.get_providers())."""
    from grefine_onnx.providers import SessionConfig, create_session

    config = SessionConfig(providers=("cuda", "cpu"), check_driver=False)
    with caplog.at_level(logging.WARNING, logger="grefine.onnx"):
        info = create_session(identity_path, config, what="probe graph")
    if info.on_gpu:
        pytest.skip("this machine has a usable GPU: nothing falls back")
    assert info.providers == ["CPUExecutionProvider"]
    assert (
        "probe graph: execution provider CUDAExecutionProvider was requested but the session runs on CPUExecutionProvider"
        in caplog.text
    )


def test_cpu_only_config_warns_nothing(identity_path, caplog):
    from grefine_onnx.providers import SessionConfig, create_session

    with caplog.at_level(logging.WARNING, logger="grefine.onnx"):
        info = create_session(identity_path, SessionConfig(providers=("cpu",)))
    assert info.providers == ["CPUExecutionProvider"] and not info.on_gpu
    assert caplog.text == ""


def test_thread_and_optimisation_settings_reach_the_session(identity_path):
    from grefine_onnx.providers import SessionConfig, create_session

    config = SessionConfig(
        providers=("cpu",), intra_op_threads=1, inter_op_threads=1, graph_optimization="basic"
    )
    opts = create_session(identity_path, config).session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


def test_tensorrt_options_enable_engine_cache_fp16_and_profile(tmp_path):
    from grefine_onnx.providers import SessionConfig, tensorrt_options

    config = SessionConfig(trt_cache_dir=str(tmp_path / "trt"), trt_fp16=True, device_id=1)
    profile = {
        "min": {"pixel_values": [1, 3, 224, 224]},
        "opt": {"pixel_values": [1, 3, 224, 224]},
        "max": {"pixel_values": [16, 3, 224, 224]},
    }
    opts = tensorrt_options(config, profile)
    assert opts["trt_engine_cache_enable"] and opts["trt_timing_cache_enable"]
    assert opts["trt_engine_cache_path"] == str(tmp_path / "trt") and (tmp_path / "trt").is_dir()
    assert opts["trt_fp16_enable"] is True and opts["device_id"] == 1
    assert opts["trt_profile_max_shapes"] == "pixel_values:16x3x224x224"
    no_cache = tensorrt_options(SessionConfig(trt_engine_cache=False, trt_cache_dir=str(tmp_path)))
    assert "trt_engine_cache_enable" not in no_cache


def test_settings_validate_provider_names():
    from grefine_onnx.providers import SessionConfig
    from grefine_onnx.settings import OnnxSettings
    from pydantic import ValidationError

    from grefine_core.errors import ConfigError

    assert OnnxSettings().providers == ["tensorrt", "cuda", "cpu"]
    assert OnnxSettings(providers=["CUDA", "cpu", "cuda"]).providers == ["cuda", "cpu"]
    with pytest.raises(ValidationError, match="unknown provider"):
        OnnxSettings(providers=["gpu"])
    with pytest.raises(ValidationError):
        OnnxSettings(providers=["cpu"], unknown_key=1)
    with pytest.raises(ConfigError, match="valid: tensorrt, cuda, cpu"):
        SessionConfig(providers=("rocm",))
    cfg = SessionConfig.from_settings(OnnxSettings(fp16=True, intra_op_threads=3))
    assert cfg.trt_fp16 and cfg.intra_op_threads == 3 and cfg.providers[0] == "tensorrt"
