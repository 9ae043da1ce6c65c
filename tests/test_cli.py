"""The command line, end to end on the bundled mini model."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import pytest
from PIL import Image

from unsee import __version__
from unsee.cli import COMMANDS, build_parser, command_in, main, mini_config
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


def test_the_help_lists_every_command_without_importing_torch():
    """`unsee --help` answers from the commands' names: no registry, no torch (which took it 7 s)."""
    code = ("import sys\nfrom unsee.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\nassert 'torch' not in sys.modules, 'the help imported torch'\n")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert all(name in run.stdout for name in COMMANDS) and "erase concepts" in run.stdout


def test_a_parser_built_for_one_command_parses_as_the_whole_parser():
    def options(parser, name):
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        return {(a.dest, tuple(a.option_strings), repr(a.default), repr(a.choices), a.help) for a in sub._actions}

    whole = build_parser()
    for name in COMMANDS:
        assert options(build_parser(name), name) == options(whole, name), name
    assert options(build_parser(""), "erase") == options(build_parser(""), "generate")  # names and help only
    assert command_in(["--help"]) == command_in(["bogus"]) == command_in([]) == ""
    assert command_in(["erase", "--concept", "circle"]) == "erase" and command_in(["world", "train"]) == "world"


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


@pytest.fixture
def quick_previews(monkeypatch):
    """Previews sampled in 2 steps (the commands read the model's sampling defaults at call time)."""
    import unsee.models
    from unsee.models import SamplingDefaults

    monkeypatch.setattr(unsee.models, "sampling_defaults", lambda model="mini": SamplingDefaults(steps=2, guidance_scale=6.0))


def test_invert_then_erase_the_learned_concept_end_to_end(tmp_path, capsys, quick_previews):
    frames, clean_ims = tmp_path / "frames", tmp_path / "clean_ims"
    assert main(["world", "sample", "--concept", "frame", "--n", "4", "--out", str(frames)]) == 0
    assert main(["world", "sample", "--concept", "frame", "--without", "--n", "4", "--out", str(clean_ims)]) == 0
    frame, clean = tmp_path / "concepts" / "frame", tmp_path / "concepts" / "clean"
    assert main(["invert", "--model", "mini", "--images", str(frames), "--token", "<frame>", "--out", str(frame),
                 "--steps", "2", "--batch-size", "2", "--vectors", "2", "--init-word", "circle", "--lr", "0.01",
                 "--template", "a {}", "--template", "{} shape", "--checkpoint-every", "1", "--seed", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "learned <frame> (2 vectors) from 4 images" in out and str(frame / "preview.png") in out
    for name in ("learned_embeds.safetensors", "concept.json", "checkpoint.pt", "preview.png"):
        assert (frame / name).exists(), name
    meta = json.loads((frame / "concept.json").read_text())
    assert meta["token"] == "<frame>" and meta["n_vectors"] == 2
    s = meta["settings"]
    assert (s["steps"], s["batch_size"], s["init_word"], s["lr"], s["templates"], s["seed"]) == (
        2, 2, "circle", 0.01, ["a {}", "{} shape"], 1)  # fmt: skip
    # rows: the training images, then two prompts from the base model, 4 cells of 96 px each
    assert Image.open(frame / "preview.png").width >= 4 * 96
    assert main(["invert", "--images", str(clean_ims), "--token", "<clean>", "--out", str(clean), "--steps", "1",
                 "--batch-size", "1", "--no-preview"]) == 0  # fmt: skip
    assert not (clean / "preview.png").exists()
    # the frame erased through its token, towards the learned neutral <clean>
    edit = tmp_path / "edit"
    assert main(["erase", "--method", "neutral", "--concept", "<frame>", "--learned", str(frame), "--learned", str(clean),
                 "--set", "c_n=<clean>", "--out", str(edit), "--iterations", "2", "--set", "batch_size=1",
                 "--set", "ddim_steps=2"]) == 0  # fmt: skip
    meta = json.loads((edit / "edit.json").read_text())
    assert meta["concepts"] == ["<frame>"] and meta["config"]["c_n"] == "<clean>"
    assert set(meta["info"]["learned"]) == {"<frame>", "<clean>"}
    assert (edit / "before_after.png").exists()
    # and an inversion through the edit: the preview adds the edited model's rows
    again = tmp_path / "concepts" / "frame-attacked"
    assert main(["invert", "--edit", str(edit), "--images", str(frames), "--token", "<frame2>", "--out", str(again),
                 "--steps", "1", "--batch-size", "1"]) == 0  # fmt: skip
    assert json.loads((again / "concept.json").read_text())["edit"]["concepts"] == ["<frame>"]
    assert Image.open(again / "preview.png").height > Image.open(frame / "preview.png").height


def test_invert_and_erase_refuse_bad_input_in_one_line(tmp_path, capsys):
    empty, bad, big = tmp_path / "empty", tmp_path / "bad", tmp_path / "big"
    for d in (empty, bad, big):
        d.mkdir()
    (bad / "0.png").write_bytes(b"not an image")
    Image.new("RGB", (64, 64)).save(big / "0.png")
    cases = [(empty, "<frame>", "--images: no images in"), (bad, "<frame>", "--images: cannot read"),
             (big, "<frame>", "not the expected 32x32; resize the images to 32x32 first (the model draws 32x32)"),
             (big, "circle", "the tokenizer already knows 'circle'; pick a new --token")]  # fmt: skip
    for folder, token, message in cases:
        out = tmp_path / "out"
        assert main(["invert", "--images", str(folder), "--token", token, "--out", str(out), "--steps", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("unsee: error: ") and message in err and "\n" not in err, err
        assert not out.exists()
    # a token-like --concept with no --learned concept for it
    assert main(["erase", "--concept", "<frame>", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--concept '<frame>' looks like a learned token, but no --learned concept was given" in err and "\n" not in err
    assert main(["erase", "--concept", "<x>", "--learned", str(tmp_path / "none"), "--out", str(tmp_path / "e")]) == 2
    assert "no learned concept at" in capsys.readouterr().err
    # a neutral target naming a learned token that was not passed
    assert main(["erase", "--method", "neutral", "--concept", "circle", "--set", "c_n=<clean>", "--out",
                 str(tmp_path / "e"), "--no-preview"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "c_n='<clean>' holds the token '<clean>'" in err and err.endswith("in --learned")


def test_attack_end_to_end_on_the_mini_model(tmp_path, capsys):
    edit, out = tmp_path / "edit", tmp_path / "attack"
    assert main(["erase", "--method", "esd", "--concept", "circle", "--out", str(edit), "--iterations", "1",
                 "--set", "batch_size=1", "--set", "ddim_steps=2", "--no-preview"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["attack", "--model", "mini", "--edit", str(edit), "--method", "inversion", "--concept", "circle",
                 "--out", str(out), "--n", "2", "--prompts", "2", "--n-images", "4", "--set", "inversion_steps=2",
                 "--set", "batch_size=1", "--set", "steps=2", "--checkpoint-every", "1"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "| ASR (unattacked or attacked) |" in printed and "'a red <adv>'" in printed
    r = json.loads((out / "attack.json").read_text())
    assert r["attack"] == "inversion" and r["concept"] == "circle" and r["label"] == "circle"
    assert r["prompts"] == ["a red circle", "an orange circle"] and r["config"]["n"] == 2
    assert r["config"]["inversion_steps"] == 2 and r["config"]["steps"] == 2 and 0 <= r["summary"]["asr"] <= 1
    assert len(list((out / "images").glob("*.png"))) == 4 and (out / "learned" / "learned_embeds.safetensors").exists()
    assert (out / "checkpoint.pt").exists()
    grid = Image.open(out / "grid.png")  # 3 rows (base, erased, attacked) for each of the 2 prompts, 2 seeds each
    assert grid.width >= 2 * 96 and grid.height >= 6 * 96
    # the synonym attack with another judge, on the images already rendered there
    assert main(["attack", "--edit", str(edit), "--method", "synonym", "--concept", "circle", "--out", str(out),
                 "--n", "1", "--prompts", "1", "--n-images", "4", "--set", "steps=2", "--judge", "judge2"]) == 0  # fmt: skip
    assert json.loads((out / "attack.json").read_text())["adversarial_prompts"] == [["a red disk"]]


def test_attack_refuses_what_it_cannot_do_in_one_line(tmp_path, capsys, tiny_pipe):
    import torch

    from unsee.methods import erase, make_config

    other = tmp_path / "other-edit"
    erase(tiny_pipe, ["circle"], make_config("esd", iterations=1, batch_size=1, ddim_steps=2),
          torch.Generator().manual_seed(0)).save(other)  # fmt: skip
    base = ["attack", "--edit", str(other), "--method", "synonym", "--concept", "circle", "--out", str(tmp_path / "a"),
            "--n", "1", "--prompts", "1", "--n-images", "2", "--set", "steps=1"]  # fmt: skip
    assert main(base) == 2  # an edit made on another model (tiny_pipe's architecture, not the mini's): no --force
    err = capsys.readouterr().err.strip()
    assert "this edit was made on an SD 1.x model" in err and "cross-attention 32" in err and "\n" not in err
    assert main([*base, "--model", str(tmp_path / "some-sd")]) == 2  # no judge for other models on the command line
    err = capsys.readouterr().err.strip()
    assert "an attack needs a judge" in err and "\n" not in err
    assert main([*base, "--concept", "zebra"]) == 2
    assert "unknown world concept 'zebra'" in capsys.readouterr().err


def test_inversion_and_attack_parameters_become_their_flags():
    from unsee.cli import cli_message

    invert, attack = set(_subparser("invert")._option_string_actions), set(_subparser("attack")._option_string_actions)
    assert cli_message("`n_vectors` must be at least 1", invert) == "--vectors must be at least 1"
    assert cli_message("every one of `templates` must hold '{}'", invert) == "every one of --template must hold '{}'"
    assert cli_message("lower `lr` (now 5)", invert) == "lower --lr (now 5)"
    assert cli_message("`n_vectors` must be at least 1", attack) == "--set n_vectors=VALUE must be at least 1"
    assert cli_message("`n_prompts` must be at least 1", attack) == "--prompts must be at least 1"
    assert cli_message("no checkpoint at x; start without `resume=True`", attack) == "no checkpoint at x; start without --resume"


def test_robust_erase_then_evaluate_under_attack(tmp_path, capsys, quick_previews):
    edit = tmp_path / "robust"
    assert main(["erase", "--method", "robust", "--concept", "circle", "--out", str(edit), "--iterations", "2",
                 "--set", "batch_size=1", "--set", "ddim_steps=2", "--set", "n_centres=5", "--n-images", "4"]) == 0  # fmt: skip
    assert len(list((edit / "images" / "circle").glob("*.png"))) == 4  # D_ce: the world's renders
    meta = json.loads((edit / "edit.json").read_text())
    assert meta["method"] == "robust" and meta["info"]["adversary_tokens"] == ["<adv0>"]
    out = tmp_path / "ev.json"
    args = ["evaluate", "--edit", str(edit), "--n", "1", "--no-check", "--out", str(out), "--attacks",
            "inversion,token-search", "--attack-n", "1", "--attack-set", "inversion.inversion_steps=2",
            "--attack-set", "token-search.search_steps=2"]  # fmt: skip
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert set(report["attacks"]["circle"]) == {"inversion", "token-search"}
    assert 0 <= report["scores"]["ASR inversion"] <= 1 and "ESR-1" in report["scores"]
    assert "| circle |" in out.with_suffix(".md").read_text() and "inversion ASR" in out.with_suffix(".md").read_text()
    kept = out.with_suffix("") / "attacks" / "circle" / "inversion" / "attack.json"
    stamp = kept.stat().st_mtime_ns
    assert main(args) == 0 and kept.stat().st_mtime_ns == stamp, "a second run reuses the kept attack results"
    capsys.readouterr()
    assert main(["evaluate", "--edit", str(edit), "--attacks", "nope", "--out", str(out)]) == 2
    assert "--attacks: unknown attack 'nope'; available:" in capsys.readouterr().err
    assert main(["erase", "--method", "esd", "--concept", "circle", "--images", str(edit / "images" / "circle"),
                 "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    assert "--images: the esd method does not learn from images" in capsys.readouterr().err
    assert main(["erase", "--method", "robust", "--concept", "circle", "--images", str(tmp_path / "none"),
                 "--out", str(tmp_path / "y")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "--images: no folder" in err and "\n" not in err


@pytest.mark.parametrize(
    "argv, func, says",
    [
        (["erase", "--concept", "circle", "--out", "E"], "_erase",
         "the last checkpoint is E/checkpoint.pt (written every 50 steps): run the same command with --resume"),
        (["alpha", "--concepts", "circle", "square", "--out", "A"], "_alpha",
         "kept on disk: every prompt's images; run the same command again"),
        (["models"], "_models", "it keeps nothing part-done"),
    ],
)  # fmt: skip
def test_ctrl_c_prints_one_line_saying_how_to_go_on(monkeypatch, capsys, argv, func, says):
    import unsee.cli as cli

    def stop(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, func, stop)
    assert cli.main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("unsee: stopped by Ctrl-C during") and says in err


def test_an_edit_knows_its_model_and_the_cli_loads_it(tmp_path, capsys, tiny_pipe):
    import shutil

    import torch

    from unsee.edits import Edit
    from unsee.methods import erase, make_config
    from unsee.models import load_pipeline

    folder = tmp_path / "model"
    tiny_pipe.save_pretrained(folder)
    pipe = load_pipeline(folder)
    cfg = make_config("esd", iterations=1, batch_size=1, ddim_steps=2)
    edit = erase(pipe, ["circle"], cfg, torch.Generator().manual_seed(0))
    assert edit.base_model == str(folder.resolve())
    edit.save(tmp_path / "edit")
    assert Edit.load(tmp_path / "edit").base_model == str(folder.resolve())
    # no --model: generate loads the folder the edit was made on (the mini would refuse the edit's fingerprint)
    out = tmp_path / "g.png"
    assert main(["generate", "--edit", str(tmp_path / "edit"), "--prompt", "a circle", "--n", "1", "--steps", "1",
                 "--out", str(out)]) == 0  # fmt: skip
    assert out.exists()
    shutil.rmtree(folder)
    capsys.readouterr()
    assert main(["generate", "--edit", str(tmp_path / "edit"), "--prompt", "a circle", "--n", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "which is not on this machine; pass --model" in err and len(err.splitlines()) == 1


def test_the_mini_is_an_edits_model_by_name_and_compositions_keep_it(mini_pipe):
    import torch

    from unsee.edits import Edit
    from unsee.methods import erase, make_config

    cfg = make_config("uce")
    a = erase(mini_pipe, ["circle"], cfg, torch.Generator().manual_seed(0))
    b = erase(mini_pipe, ["red"], cfg, torch.Generator().manual_seed(0))
    assert a.base_model == "mini" and Edit.compose([a, b], mini_pipe).base_model == "mini"
