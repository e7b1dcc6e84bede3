"""A backbone plugin: a CLIP-shaped stand-in (grefine_core.ClipBackbone) that the PQ and AQ
indicators can run on (``--set plugins.backbone.name=toy``). Its features are random: it shows
the shapes, not a model."""

import numpy as np

from grefine_core import hookimpl


class ToyBackbone:
    description = "toy backbone (random features)"
    image_size = 32
    embed_dim = 16
    text_width = 8
    templates = ("a photo of {}.", "{}")

    def __init__(self):
        import torch

        self.device = torch.device("cpu")
        self._gen = torch.Generator().manual_seed(0)

    def preprocess(self, image):
        import torch

        small = image.convert("RGB").resize((self.image_size, self.image_size))
        pixels = torch.from_numpy(np.asarray(small, np.float32) / 255.0)  # (S, S, 3)
        return pixels.permute(2, 0, 1).unsqueeze(0)  # (1, 3, S, S)

    def encode_image(self, pixel_values):
        import torch

        grid = 4  # 4 x 4 patches + the class token
        shape = (pixel_values.shape[0], 1 + grid * grid, self.embed_dim)
        return torch.randn(shape, generator=self._gen)

    def encode_texts(self, texts):
        import torch

        return torch.randn((len(texts), self.embed_dim), generator=self._gen)

    def encode_prompt_embeddings(self, embeddings, eot_index):
        import torch

        return torch.randn((embeddings.shape[0], self.embed_dim), generator=self._gen)

    def planted_pq_prompts(self):  # optional: PQ prompts of this width, instead of the files
        import torch

        factors = ("overall", "technical", "rational", "natural")
        return {f: torch.zeros((2, 77, self.text_width)) for f in factors}


def toy_backbone(context):
    # One instance per configuration: keep it in the pipeline's model cache.
    return context.models.get_or_create("toy-backbone", ToyBackbone)


@hookimpl
def grefine_backbones():
    return {"toy": toy_backbone}
