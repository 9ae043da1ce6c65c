"""Image sets of one world concept (a textual inversion's D_c): ground truth, the oracle's reading, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unsee.cli import main
from unsee.images import load_image_folder
from unsee.world.concepts import CONCEPT_WORDS, concept_scenes, world_concept, write_concept_images
from unsee.world.oracle import load_oracle


@pytest.mark.parametrize("word", sorted(CONCEPT_WORDS))
def test_every_scene_shows_the_concept_and_without_none_does(word):
    c = world_concept(word)
    shown = concept_scenes(word, 40, np.random.default_rng(0))
    assert len(shown) == 40 and all(c.shown_in(s) for s in shown)
    if c.kind in ("object", "colour"):
        assert all(len(s.things) == 1 for s in shown), "single-object scenes"
    not_shown = concept_scenes(word, 40, np.random.default_rng(0), without=True)
    assert len(not_shown) == 40 and not any(c.shown_in(s) for s in not_shown)
    # everything else varies
    assert len({(s.things[0].obj, s.things[0].colour, s.background, s.frame) for s in shown}) > 5


def test_concepts_resolve_synonyms_and_refuse_unknown_words():
    assert (world_concept("disk").kind, world_concept("disk").name) == ("object", "circle")
    assert (world_concept(" Chequered ").kind, world_concept("chequered").name) == ("background", "checkered")
    assert (world_concept("teal").kind, world_concept("frame").kind) == ("colour", "frame")
    with pytest.raises(ValueError, match=r"^unknown world concept 'zebra'; known: objects circle, disk, .*plus; colours red, "
                                         r".*; styles plain, .*chequered; and the hidden concept frame$"):  # fmt: skip
        world_concept("zebra")
    with pytest.raises(ValueError, match=r"^`n` must be at least 1 \(got 0\)"):
        concept_scenes("circle", 0, np.random.default_rng(0))


@pytest.mark.parametrize(("word", "without"), [("frame", False), ("disk", False), ("red", False), ("stripy", False),
                                               ("frame", True), ("circle", True)])  # fmt: skip
def test_the_folder_shows_the_concept_by_ground_truth_and_by_the_oracle(tmp_path, word, without):
    out = tmp_path / "set"
    args = ["world", "sample", "--concept", word, "--n", "64", "--seed", "3", "--out", str(out)]
    assert main(args + (["--without"] if without else [])) == 0
    meta = json.loads((out / "concept.json").read_text())
    assert (meta["concept"], meta["n"], meta["seed"], meta["without"]) == (word, 64, 3, without)
    assert (out / "preview" / "grid.png").exists()
    images = load_image_folder(out, 32)  # a plain image folder at the world's size
    assert images.shape == (64, 3, 32, 32)
    assert [m["file"] for m in meta["images"]] == sorted(p.name for p in out.glob("*.png"))
    c = world_concept(word)
    truth = {"object": lambda m: c.name in m["objects"], "colour": lambda m: c.name in m["colours"],
             "background": lambda m: m["background"] == c.name, "frame": lambda m: m["frame"]}[c.kind]  # fmt: skip
    assert all(truth(m) != without for m in meta["images"]), "every image by the world's ground truth"
    # the same scenes as the library draws from the seed
    scenes = concept_scenes(word, 64, np.random.default_rng(3), without=without)
    assert [s.frame for s in scenes] == [m["frame"] for m in meta["images"]]
    top1 = [row[0] for row in load_oracle().topk(images, 1)[c.kind]]
    agree = np.mean([(label == c.name) != without for label in top1])
    assert agree >= 0.95, f"the oracle reads {word} (without={without}) on {agree:.0%} of the images"


def test_a_folder_that_already_holds_images_is_refused(tmp_path, capsys):
    write_concept_images("ring", tmp_path, n=4, seed=0)
    capsys.readouterr()
    assert main(["world", "sample", "--concept", "ring", "--n", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"unsee: error: {tmp_path} already holds images; pass a new or empty folder as --out"
    assert len(list(tmp_path.glob("*.png"))) == 4


def test_the_cli_says_what_is_wrong_in_one_line(tmp_path, capsys):
    assert main(["world", "sample", "--concept", "zebra", "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unsee: error: unknown world concept 'zebra'; known: objects circle, disk,") and "\n" not in err
    assert not (tmp_path / "z").exists()
    assert main(["world", "sample", "--concept", "frame"]) == 2
    assert capsys.readouterr().err.strip() == "unsee: error: --concept writes a folder of images: pass --out DIR"
    assert main(["world", "sample", "--without", "--out", str(tmp_path / "w.png")]) == 2
    assert "--without needs --concept" in capsys.readouterr().err
    assert main(["world", "sample", "--concept", "frame", "--n", "0", "--out", str(tmp_path / "f")]) == 2
    assert capsys.readouterr().err.strip() == "unsee: error: --n must be at least 1 (got 0): the number of images"
