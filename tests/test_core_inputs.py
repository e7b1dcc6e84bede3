"""Bad and unusual input images: clear errors or clean conversion, never a crash."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from grefine_core.config import ImageSettings
from grefine_core.errors import InputError
from grefine_core.imageio import load_image, to_rgb


def test_missing_directory_empty_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match=r"does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match=r"is a directory, not an image file"):
        load_image(tmp_path)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"is empty \(0 bytes\)"):
        load_image(empty)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InputError, match=r"not a readable image"):
        load_image(garbage)
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    with pytest.raises(InputError, match=r"truncated\.png"):
        load_image(truncated)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_is_converted_to_rgb(tmp_path, mode):
    base = Image.linear_gradient("L").resize((40, 30))
    if mode == "I;16":
        img = Image.fromarray(np.asarray(base, np.uint16) * 257)
        assert img.mode == "I;16"
    else:
        img = base.convert(mode)
    rgb, info = load_image(img)
    assert rgb.mode == "RGB" and rgb.size == (40, 30)
    assert info.original_mode == mode
    arr = np.asarray(rgb)
    # The gradient survives (not clipped to white, not all black).
    assert arr.max() > 200 and arr.min() < 60 or mode == "1"


def test_sixteen_bit_file_keeps_its_range(tmp_path):
    arr = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    rgb, info = load_image(path)
    out = np.asarray(rgb)[..., 0]
    assert info.original_mode.startswith("I")
    assert abs(int(out[0, 0]) - 0) <= 1 and abs(int(out[-1, -1]) - 255) <= 1
    assert 100 < out[24, 32] < 160


def test_rgba_alpha_is_composited_on_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(to_rgb(img))[0, 0].tolist() == [255, 255, 255]


def test_one_pixel_image_loads():
    rgb, info = load_image(Image.new("RGB", (1, 1), (1, 2, 3)))
    assert rgb.size == (1, 1) and info.downscaled is False


def test_huge_image_is_downscaled_with_a_message(tmp_path, caplog):
    path = tmp_path / "huge.png"
    Image.new("L", (10000, 10000), 128).save(path)
    with caplog.at_level("WARNING"):
        rgb, info = load_image(path, ImageSettings(max_side=4096))
    assert rgb.size == (4096, 4096) and info.downscaled and info.original_size == (10000, 10000)
    assert "downscaled to 4096x4096" in caplog.text


def test_image_over_the_hard_limit_is_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (300, 300), 0).save(path)
    with pytest.raises(
        InputError, match=r"300x300 \(90,000 pixels\), more than the limit of 50,000"
    ):
        load_image(path, ImageSettings(max_pixels_hard=50_000))


def test_large_jpeg_is_decoded_at_reduced_scale_and_reports_its_original_size(tmp_path, caplog):
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (2400, 1600), (90, 120, 150)).save(path, quality=80)
    with caplog.at_level("WARNING"):
        rgb, info = load_image(path, ImageSettings(max_side=512))
    assert rgb.size == (512, 341) and info.downscaled
    assert info.original_size == (2400, 1600) and info.original_mode == "RGB"
    assert "is 2400x1600; downscaled to 512x341" in caplog.text


def test_draft_happens_before_decoding(tmp_path):
    from grefine_core import imageio

    path = tmp_path / "big.jpg"
    Image.new("RGB", (2048, 2048), (1, 2, 3)).save(path)
    image, size, mode = imageio._open_checked(path, ImageSettings(max_side=256))
    assert size == (2048, 2048) and mode == "RGB"
    assert image.size == (256, 256)  # 1/8 DCT scale: never decoded at full size


def test_unreadable_file_names_the_problem(tmp_path, monkeypatch):
    path = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(InputError, match=r"secret\.png' cannot be read: permission denied"):
        load_image(path)
