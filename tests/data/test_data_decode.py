"""Images are read faithfully: high bit depth scaled (not clipped), EXIF orientation applied,
what cannot be converted counted as unreadable."""

import numpy as np
import pytest
from PIL import Image

from vlda.data.check import inspect_image, scan_images
from vlda.data.dataset import BadImageError, ImageDataset, require_readable
from vlda.data.decode import load_image


def test_a_full_range_16_bit_gradient_is_scaled_not_clipped(tmp_path):
    ramp = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    # What PIL's own conversion gives: everything above 255 clipped to white.
    clipped = np.asarray(Image.open(path).convert("RGB"))[..., 0]
    assert (clipped == 255).mean() > 0.99
    got = np.asarray(load_image(path))
    expected = np.floor(ramp / 257.0 + 0.5)  # 65535 -> 255, linear, rounded
    assert got.dtype == np.uint8 and np.array_equal(got, expected)
    assert (got == 255).mean() < 0.01
    # every 8-bit level is used, about equally often (a faithful gradient)
    assert len(np.unique(got)) == 256
    assert inspect_image(path) == (None, True)


def test_float_and_32_bit_images_are_scaled(tmp_path):
    unit = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(unit, mode="F").save(tmp_path / "unit.tif")
    assert np.array_equal(np.asarray(load_image(tmp_path / "unit.tif")), np.rint(unit * 255.0))
    wide = np.linspace(-100.0, 300.0, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(wide, mode="F").save(tmp_path / "wide.tif")
    expected = np.rint((wide.astype(np.float64) + 100.0) * 255.0 / 400.0)
    assert np.array_equal(np.asarray(load_image(tmp_path / "wide.tif")), expected)
    big = (np.arange(64, dtype=np.int32) * 100_000).reshape(8, 8)
    Image.fromarray(big, mode="I").save(tmp_path / "big.tif")
    got = np.asarray(load_image(tmp_path / "big.tif"))
    assert got.min() == 0 and got.max() == 255
    assert np.array_equal(got, np.rint(big * 255.0 / big.max()))


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((2, 4, 3), dtype=np.uint8)  # 2 rows, 4 columns; one red corner
    stored[0, 0] = (255, 0, 0)
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.png"  # lossless (a JPEG would blur the 8 pixels)
    img.save(path, exif=exif)
    got = np.asarray(load_image(path))
    assert got.shape == (4, 2, 3)
    displayed = np.rot90(np.asarray(Image.open(path)), k=-1)  # clockwise, by hand
    assert np.array_equal(got, displayed)
    assert got[0, 1, 0] == 255 and got[0, 0, 0] == 0  # the red corner went to the top right


def test_an_image_that_cannot_be_converted_counts_as_unreadable(tmp_path):
    bad = np.full((4, 4), np.nan, dtype=np.float32)
    Image.fromarray(bad, mode="F").save(tmp_path / "nan.tif")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:40])
    paths = [tmp_path / "ok.png", tmp_path / "nan.tif", tmp_path / "cut.png"]
    scan = scan_images(paths, workers=1)
    assert [p.name for p, _ in scan.unreadable] == ["nan.tif", "cut.png"]
    ds = ImageDataset([(p, 0) for p in paths], transform=lambda img, rng: img)
    assert [ds[i]["image"] is None for i in range(3)] == [False, True, True]


def test_strict_images_error_lists_every_unreadable_file(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "ok.png")
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"not an image")
    paths = [tmp_path / n for n in ("a.png", "ok.png", "b.png", "c.png")]
    with pytest.raises(BadImageError) as err:
        require_readable(paths)
    first, *listed = str(err.value).splitlines()
    assert first.startswith("3 image(s) cannot be read and data.strict_images is true")
    assert [line.split()[0] for line in listed] == [str(tmp_path / n) for n in ("a.png", "b.png", "c.png")]
    assert isinstance(err.value, ValueError)  # the CLI prints it as one sentence, exit code 2
