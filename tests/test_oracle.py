"""The shipped oracle sees what was drawn."""

from __future__ import annotations

import pytest

from unsee.world.data import make_batch, scene_rng
from unsee.world.oracle import HEADS, evaluate_oracle, load_oracle


@pytest.fixture(scope="module")
def oracle():
    return load_oracle()


def test_oracle_reads_fresh_renders(oracle):
    acc = evaluate_oracle(oracle, n=400, seed=123)
    assert set(acc) == set(HEADS)
    for head, a in acc.items():
        assert a >= 0.97, (head, a)


def test_oracle_names_both_objects_of_a_two_object_scene(oracle):
    acc = evaluate_oracle(oracle, n=200, seed=5, two_objects=True)
    assert acc["object"] >= 0.8 and acc["colour"] >= 0.9


def test_oracle_sees_the_drawn_attributes(oracle):
    b = make_batch(scene_rng(9, 9, 0), 16, obj="hexagon", colour="purple", background="striped", two_objects=False)
    top = oracle.topk((b.images + 1) / 2, k=1)
    assert sum(r == ["hexagon"] for r in top["object"]) >= 15
    assert all(r == ["purple"] for r in top["colour"])
    assert all(r == ["striped"] for r in top["background"])


def test_missing_oracle_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="unsee world train-oracle"):
        load_oracle(tmp_path / "nope")
