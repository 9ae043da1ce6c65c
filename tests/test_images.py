"""Image folders in (load_image_folder's tensors and its one-line errors) and grids out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from unsee.images import load_image_folder


def _write(path, size=(32, 32), mode="RGB", value=(10, 200, 30)):
    h, w = size
    arr = np.zeros((h, w, 3), np.uint8) + np.array(value, np.uint8)
    im = Image.fromarray(arr)
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path)
    return arr


def test_loads_a_folder_in_sorted_order_as_rgb_in_unit_range(tmp_path):
    b = _write(tmp_path / "b.png", value=(0, 0, 255))
    a = _write(tmp_path / "a.PNG", value=(255, 0, 0))
    _write(tmp_path / "c.bmp", value=(0, 255, 0))
    _write(tmp_path / "d.png", mode="RGBA", value=(7, 8, 9))
    _write(tmp_path / "e.png", mode="L", value=(128, 128, 128))
    _write(tmp_path / "f.jpg", value=(20, 40, 60))
    (tmp_path / "concept.json").write_text("{}")  # not an image: left out
    (tmp_path / ".hidden.png").write_bytes(b"junk")  # hidden: left out
    (tmp_path / "preview").mkdir()
    _write(tmp_path / "preview" / "grid.png", size=(300, 500))  # subfolders: left out
    x = load_image_folder(tmp_path, 32)
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    torch.testing.assert_close(x[0], torch.from_numpy(a).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(x[1], torch.from_numpy(b).permute(2, 0, 1).float() / 255)
    assert x[2, 1].eq(1).all() and x[2, 0].eq(0).all()  # c.bmp: green
    assert torch.allclose(x[3, :, 0, 0], torch.tensor([7, 8, 9]) / 255)  # RGBA: alpha dropped
    assert torch.allclose(x[4, :, 0, 0], torch.full((3,), 128 / 255))  # greyscale: three equal channels
    assert torch.allclose(x[5, :, 0, 0], torch.tensor([20, 40, 60]) / 255, atol=3 / 255)  # JPEG: lossy
    # size as (height, width), and None: the first image's
    assert load_image_folder(tmp_path, (32, 32)).shape == (6, 3, 32, 32)
    assert load_image_folder(tmp_path).shape == (6, 3, 32, 32)


def test_a_missing_folder_or_a_file(tmp_path):
    with pytest.raises(ValueError, match=r"^no folder .*nope; pass a folder of images"):
        load_image_folder(tmp_path / "nope", 32)
    _write(tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"a\.png is a file, not a folder; pass the folder that holds the images$"):
        load_image_folder(tmp_path / "a.png", 32)


def test_an_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"^no images in .* \(looked for \.png, \.jpg, .*\); put the images there"):
        load_image_folder(tmp_path, 32)


def test_a_file_that_is_not_an_image_is_named(tmp_path):
    _write(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"^cannot read .*b\.png as an image \(UnidentifiedImageError\); remove it"):
        load_image_folder(tmp_path, 32)


def test_a_wrong_size_is_named_with_the_expected_one(tmp_path):
    _write(tmp_path / "a.png")
    _write(tmp_path / "b.png", size=(64, 48))
    msg = r"b\.png is 64x48 \(height x width\), not the expected 32x32; resize the images to 32x32 first$"
    with pytest.raises(ValueError, match=msg):
        load_image_folder(tmp_path, 32)
    with pytest.raises(ValueError, match=msg):
        load_image_folder(tmp_path)  # None: the first image's size
    with pytest.raises(ValueError, match=r"a\.png is 32x32 \(height x width\), not the expected 64x48"):
        load_image_folder(tmp_path, (64, 48))
    with pytest.raises(ValueError) as err:
        load_image_folder(tmp_path, 32)
    assert "\n" not in str(err.value), "one line"


def test_a_title_longer_than_the_grid_wraps_instead_of_being_cut():
    from unsee.images import image_grid

    images = torch.zeros(2, 3, 8, 8)
    short = image_grid(images, cols=2, cell=32, title="two cells")
    long = image_grid(images, cols=2, cell=32, title="a title far wider than two cells of thirty-two pixels each")
    assert short.width == long.width == 64 and long.height > short.height  # one line more, or several
    ink = np.asarray(long.convert("L"))[: long.height - short.height + 18] < 128
    assert ink[18:].any() and not ink[:, -2:].any()  # text below the first line; none runs off the right edge
