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


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--n", "0"], "--n must be at least 1 (got 0): it is the number of images per prompt"),
        (["--steps", "0"], "--steps must be at least 1 (got 0): DDIM takes at least one denoising step"),
        (["--steps", "-2"], "--steps must be at least 1 (got -2): DDIM takes at least one denoising step"),
        (["--guidance", "-1"], "--guidance must be at least 0 (got -1.0): up to 1 samples without"),
    ],
)
def test_generate_refuses_settings_that_cannot_sample(tmp_path, capsys, flags, message):
    out = tmp_path / "g.png"
    assert main(["generate", "--prompt", "a red circle", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"unsee: error: {message}") and "\n" not in err
    assert not out.exists()


def test_library_parameters_become_the_commands_flags():
    from unsee.cli import cli_message

    erase = set(_subparser("erase")._option_string_actions)
    assert cli_message("loss is nan at iteration 3; lower `lr` (now 0.0001)", erase) == (
        "loss is nan at iteration 3; lower --lr (now 0.0001)"
    )
    assert cli_message("use a word it knows, or pass `allow_split=True`", erase) == "use a word it knows, or pass --allow-split"
    assert cli_message("no checkpoint at x; run without `resume=True`", erase) == "no checkpoint at x; run without --resume"
    assert cli_message("another erasure; use a new `run.dir`", erase) == "another erasure; use a new --out"
    assert cli_message("pass at least one in `concepts`", erase) == "pass at least one in --concept"
    assert cli_message("or use `adversary=search`", erase) == "or use --adversary search"
    assert cli_message("pass more `words` or fewer `exclude`", erase) == (
        "pass more --set words=VALUE or fewer --set exclude=VALUE"
    )
    generate = set(_subparser("generate")._option_string_actions)
    assert cli_message("load that model or pass `force=True`", generate) == "load that model or pass --force"
    assert cli_message("`guidance_scale` must be at least 0", generate) == "--guidance must be at least 0"
    train = set(_subparser("world", "train")._option_string_actions)
    assert cli_message("set `detail_from`/`detail_to`, or `detail_to=0` for none", train) == (
        "set --detail-from/--detail-to, or --detail-to 0 for none"
    )
    assert cli_message("lower `vae_lr`", train) == "lower `vae_lr`", "no flag and no --set: the Python name stays"
    assert cli_message("use the same settings or a new `out`", train) == "use the same settings or a new --out"
    # shell commands and file names in backticks are not parameters
    msg = "no edit at e (edit.json missing); make one with `unsee erase --out e`; see `edit.json`"
    assert cli_message(msg, erase) == msg


def _subparser(*names: str):
    import argparse

    parser = build_parser()
    for name in names:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


LIBRARY_CHATTER = ("requires torchvision", "[transformers]", "Loading pipeline components", "Loading weights", "it/s]")


def test_generate_shows_its_own_output_not_its_libraries(tmp_path, capfd):
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    state = lambda: [(log.get_verbosity(), log.is_progress_bar_enabled()) for log in (dlog, tlog)]  # noqa: E731
    before = state()
    out = tmp_path / "g.png"
    assert main(["generate", "--prompt", "a red circle", "--n", "1", "--steps", "1", "--out", str(out)]) == 0
    got = capfd.readouterr()
    assert got.out == f"wrote {out}\n"
    assert not any(s in got.err for s in LIBRARY_CHATTER), got.err
    assert state() == before, "the libraries' settings are put back after the command"


def test_a_fresh_process_prints_no_import_time_warnings(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "g.png"
    r = subprocess.run([sys.executable, "-m", "unsee.cli", "generate", "--prompt", "a red circle", "--n", "1", "--steps", "1",
                        "--out", str(out)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"wrote {out}\n"
    assert r.stderr == "", r.stderr


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
    report = json.loads((tmp_path / "ev.json").read_text())
    scores = report["scores"]
    assert 0 <= scores["ESR-1"] <= 1 and 0 <= scores["PSR-1"] <= 1
    # the second judge's per-class agreement, and the classes below the floor, in the JSON and the Markdown
    assert all(0 <= r["agreement"] <= 1 for r in report["per_class"].values())
    assert report["flagged"] == [c for c, r in report["per_class"].items() if r["agreement"] < 0.8]
    md = (tmp_path / "ev.md").read_text()
    assert "| class |" in md and "agreement" in md
    assert all(f"| {c} ⚠ |" in md for c in report["flagged"])


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
    assert "or pass --allow-split to erase the pieces together" in capsys.readouterr().err
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
