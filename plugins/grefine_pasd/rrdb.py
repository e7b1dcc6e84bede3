"""ESRGAN residual-in-residual dense blocks (the ``use_rrdb`` stem of PASD's ControlNet).

Layout as in the ESRGAN paper and basicsr (Apache-2.0), re-implemented from its description:
a dense block is five 3x3 convolutions with dense concatenation (LeakyReLU 0.2 after the first
four), output scaled by 0.2 plus the input; an RRDB chains three dense blocks, again ``0.2 * out +
input``. Key names match the official checkpoints (``rdb{1,2,3}.conv{1..5}``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions with a 0.2-scaled residual.

    :param num_feat: channels in and out.
    :param num_grow_ch: channels added by each of the first four convolutions.
    """

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        for i in range(4):
            setattr(
                self, f"conv{i + 1}", nn.Conv2d(num_feat + i * num_grow_ch, num_grow_ch, 3, 1, 1)
            )
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for i in range(4):
            conv = getattr(self, f"conv{i + 1}")
            features.append(F.leaky_relu(conv(torch.cat(features, 1)), 0.2))
        return self.conv5(torch.cat(features, 1)) * 0.2 + x


class RRDB(nn.Module):
    """Three dense blocks with a 0.2-scaled residual around them."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x
