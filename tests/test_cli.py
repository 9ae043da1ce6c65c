"""The command line, end to end on the bundled mini model."""

from __future__ import annotations

import json
import time

import pytest
from PIL import Image

from unsee import __version__
from unsee.cli import build_parser, main, mini_config
from unsee.world.mini import MiniConfig


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


def test_erase_apply_generate_evaluate_end_to_end(tmp_path):
    edit = tmp_path / "edit"
    assert main(["erase", "--model", "mini", "--method", "esd", "--concept", "circle", "--out", str(edit),
                 "--iterations", "2", "--set", "batch_size=1", "--set", "ddim_steps=2"]) == 0  # fmt: skip
    assert (edit / "edit.safetensors").exists() and (edit / "before_after.png").exists()
    meta = json.loads((edit / "edit.json").read_text())
    assert meta["method"] == "esd" and meta["concepts"] == ["circle"] and meta["config"]["batch_size"] == 1
    assert main(["generate", "--edit", str(edit), "--prompt", "a red circle", "--n", "2", "--out",
                 str(tmp_path / "g.png")]) == 0  # fmt: skip
    assert main(["apply", str(edit), "--model", "mini", "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "model_index.json").exists()
    assert main(["evaluate", "--edit", str(edit), "--n", "1", "--out", str(tmp_path / "ev.json")]) == 0
    scores = json.loads((tmp_path / "ev.json").read_text())["scores"]
    assert 0 <= scores["ESR-1"] <= 1 and 0 <= scores["PSR-1"] <= 1


def test_erase_resumes_and_refuses_bad_input(tmp_path, capsys):
    edit = tmp_path / "edit"
    args = ["erase", "--method", "esd", "--concept", "circle", "--out", str(edit), "--no-preview",
            "--set", "batch_size=1", "--set", "ddim_steps=2", "--checkpoint-every", "1"]  # fmt: skip
    assert main(args + ["--iterations", "1"]) == 0
    assert (edit / "checkpoint.pt").exists()
    assert main(args + ["--iterations", "2", "--resume"]) == 0
    assert json.loads((edit / "edit.json").read_text())["info"]["log"][-1]["iteration"] == 2
    capsys.readouterr()
    assert main(["erase", "--concept", "zebra", "--out", str(tmp_path / "z"), "--no-preview"]) == 2
    assert "--allow-split" in capsys.readouterr().err
    assert main(["erase", "--concept", "circle", "--out", str(tmp_path / "x"), "--set", "colour=1"]) == 2


def test_world_train_flags_reach_the_trainer_config():
    args = build_parser().parse_args(
        ["world", "train", "--min-snr-gamma", "1000", "--snr-floor", "0.5", "--steps", "7", "--prediction-type", "epsilon",
         "--no-zero-terminal-snr", "--t-sampling", "uniform", "--anneal-from", "3", "--anneal-to", "5",
         "--heads", "4", "--warmup", "9"]
    )  # fmt: skip
    cfg = mini_config(args)
    assert (cfg.min_snr_gamma, cfg.snr_floor, cfg.steps, cfg.prediction_type) == (1000.0, 0.5, 7, "epsilon")
    assert (cfg.zero_terminal_snr, cfg.t_sampling, cfg.anneal_from, cfg.anneal_to) == (False, "uniform", 3, 5)
    assert (cfg.heads, cfg.warmup) == (4, 9)
    for flag, frozen in (("--freeze-text-encoder", True), ("--no-freeze-text-encoder", False)):
        assert mini_config(build_parser().parse_args(["world", "train", flag])).freeze_text_encoder is frozen
    # without flags, the documented recipe
    defaults = mini_config(build_parser().parse_args(["world", "train"]))
    assert defaults == MiniConfig()


def test_key_value_pairs_parse_as_json_where_they_can():
    from unsee.cli import parse_key_values

    got = parse_key_values(["lr=1e-3", "unet-channels=[32,64]", "clip_sample=true", "timestep_spacing=trailing"])
    assert got == {"lr": 1e-3, "unet_channels": (32, 64), "clip_sample": True, "timestep_spacing": "trailing"}
    with pytest.raises(ValueError, match="--scheduler takes key=value"):
        parse_key_values(["steps_offset"], "--scheduler")
