"""The real OpenAI ViT-B/16 architecture (random weights) through ``SurgeryCLIP.from_pretrained``:
a local OpenAI-format file, a folder, and an open_clip name whose weights are in the HF cache."""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

pytestmark = pytest.mark.slow

HF_REPO = "timm/vit_base_patch16_clip_224.openai"


@pytest.fixture(scope="module")
def vitb16(tmp_path_factory):
    """(open_clip model, .pt path, HF cache dir), built and written once."""
    logging.getLogger().setLevel(logging.ERROR)  # "No pretrained weights loaded" is expected
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval()
    root = tmp_path_factory.mktemp("vitb16")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pt = root / "weights" / "ViT-B-16.pt"
    pt.parent.mkdir()
    torch.save(state, pt)
    # The Hugging Face cache layout open_clip reads for ("ViT-B-16-quickgelu", "openai").
    from safetensors.torch import save_file

    cache = root / "hf"
    rev = "0" * 40
    snap = cache / f"models--{HF_REPO.replace('/', '--')}" / "snapshots" / rev
    snap.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in state.items()}, str(snap / "open_clip_model.safetensors")
    )
    refs = cache / f"models--{HF_REPO.replace('/', '--')}" / "refs"
    refs.mkdir()
    (refs / "main").write_text(rev)
    return model, pt, cache


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, 224, 224, generator=gen), ["a photo of a cat", "two dogs"]


def _check(clip, model, inputs) -> torch.Tensor:
    x, texts = inputs
    tokens = clip.encode_image(x)
    assert tokens.shape == (1, 197, 512)
    assert len(clip.visual.blocks) == 12 and clip.text_width == 512
    with torch.inference_mode():
        emb = model.encode_image(x)
        text = model.encode_text(open_clip.get_tokenizer("ViT-B-16")(texts))
    # Row 0 of the surgery tokens is plain CLIP's image embedding; the text tower is plain CLIP.
    assert float((tokens[:, 0] - emb).abs().max()) < 1e-4
    assert float((clip.encode_text(texts) - text).abs().max()) < 1e-4
    plain = clip.encode_image(x, surgery=False)
    assert float((plain[:, 1:] - tokens[:, 1:]).abs().max()) > 1e-3  # surgery changes patches
    return tokens


@pytest.fixture(scope="module")
def clip_from_file(vitb16):
    from grefine_clip import SurgeryCLIP

    return SurgeryCLIP.from_pretrained(vitb16[1])


def test_local_openai_format_file_and_folder(vitb16, clip_from_file, inputs):
    from grefine_clip import SurgeryCLIP

    model, pt, _ = vitb16
    tokens = _check(clip_from_file, model, inputs)
    from_folder = SurgeryCLIP.from_pretrained(pt.parent).encode_image(inputs[0])
    assert torch.equal(from_folder, tokens)


def test_open_clip_name_with_cached_weights(vitb16, inputs, monkeypatch):
    from grefine_clip import SurgeryCLIP

    model, _, cache = vitb16
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = SurgeryCLIP.from_pretrained("ViT-B-16-quickgelu", "openai", cache_dir=str(cache))
    _check(clip, model, inputs)
    # "ViT-B-16" + "openai" gets QuickGELU too (open_clip 3.x would build GELU).
    clip2 = SurgeryCLIP.from_pretrained("ViT-B-16", "openai", cache_dir=str(cache))
    assert torch.allclose(clip2.encode_image(inputs[0]), clip.encode_image(inputs[0]), atol=1e-5)
    assert isinstance(
        clip2.model.visual.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU
    )


def test_pq_on_vitb16(clip_from_file, pq_embeddings_dir):
    import numpy as np
    from grefine_quality import PerceptualQuality, load_pq_prompts
    from PIL import Image

    pq = PerceptualQuality(clip_from_file, load_pq_prompts(pq_embeddings_dir))
    r = pq(Image.new("RGB", (320, 200), (30, 140, 90)))
    assert r.map.shape == (200, 320) and np.isfinite(r.map).all() and 0.0 <= r.score <= 1.0
