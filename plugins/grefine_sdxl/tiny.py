"""The ``tiny`` model: a random-weight SDXL inpainting pipeline built in code from explicit configs.

Same architecture family as the real model (two CLIP text encoders, a 9-channel SDXL UNet with
``text_time`` added conditioning, an AutoencoderKL), about 2 M parameters, fixed seed. It proves
the plumbing offline on a CPU; its "refined" images are not better in any way.
Nothing is downloaded: the tokenizer is rebuilt from the BPE merges that ship inside open_clip.
"""

from __future__ import annotations

from typing import Any

#: Seed of the tiny weights (independent of the run seed, which drives the sampling noise).
TINY_SEED = 0
CLIP_VOCAB_SIZE = 49408


def bundled_clip_tokenizer() -> Any:
    """OpenAI CLIP's tokenizer (49408 tokens, 77 positions) from open_clip's bundled BPE file.

    Built with ``vocab=``/``merges=``: transformers 5 silently ignores ``vocab_file=``.

    :returns: a ``transformers.CLIPTokenizer``.
    """
    import gzip

    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    with gzip.open(default_bpe()) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    tok = CLIPTokenizer(
        vocab={t: i for i, t in enumerate(vocab)}, merges=merges, model_max_length=77
    )
    if len(tok) != CLIP_VOCAB_SIZE:  # pragma: no cover - guards the transformers pitfall above
        raise RuntimeError(f"bundled CLIP tokenizer has {len(tok)} tokens, expected 49408")
    return tok


def build_tiny_pipeline(seed: int = TINY_SEED) -> Any:
    """Build the tiny ``StableDiffusionXLInpaintPipeline`` in memory (eval mode, float32, CPU).

    The global torch RNG is left as it was.

    :param seed: seed of the random weights.
    :returns: the pipeline. Native size: ``unet.sample_size (32) * vae scale (2)`` = 64 px.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = bundled_clip_tokenizer()
    text_config = CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=32,
        max_position_embeddings=77,
        hidden_act="gelu",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(text_config)
        text_encoder_2 = CLIPTextModelWithProjection(text_config)
        vae = AutoencoderKL(
            block_out_channels=[32, 64],
            down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2,
            latent_channels=4,
            sample_size=64,
        )
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            in_channels=9,  # latents 4 + mask 1 + masked-image latents 4, like the real model
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            # 6 time ids * 8 + text_encoder_2 projection (no aesthetics score)
            projection_class_embeddings_input_dim=6 * 8 + 32,
            cross_attention_dim=64,  # hidden(te1) + hidden(te2)
        )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    for module in (text_encoder, text_encoder_2, vae, unet):
        module.eval()  # as from_pretrained leaves them
    return StableDiffusionXLInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        image_encoder=None,
        feature_extractor=None,
        requires_aesthetics_score=False,
    )
