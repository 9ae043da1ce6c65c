"""The command line, end to end on the bundled mini model."""

from __future__ import annotations

import time

from PIL import Image

from unsee import __version__
from unsee.cli import main


def test_generate_writes_a_labelled_grid(tmp_path, capsys):
    out = tmp_path / "grid.png"
    t = time.perf_counter()
    assert main(["generate", "--model", "mini", "--prompt", "a red circle", "--n", "8", "--seed", "0",
                 "--out", str(out), "--save-each"]) == 0  # fmt: skip
    assert time.perf_counter() - t < 60
    grid = Image.open(out)
    assert grid.width == 8 * 128 and grid.height > 128
    assert len(list((tmp_path / "grid").glob("*.png"))) == 8


def test_bad_model_is_a_one_line_error(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "missing"), "--prompt", "x", "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unsee: error: no folder") and "\n" not in err


def test_version_and_models(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert __version__ in capsys.readouterr().out
    assert main(["models"]) == 0
    assert "mini" in capsys.readouterr().out


def test_world_sample_grid(tmp_path):
    out = tmp_path / "world.png"
    assert main(["world", "sample", "--out", str(out), "--n", "8"]) == 0
    assert Image.open(out).width == 8 * 128
