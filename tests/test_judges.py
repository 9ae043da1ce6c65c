"""One judge interface: the world's oracle and second judge are Judges, any classifier becomes one, two
judges' agreement flags the classes they disagree on, and the core imports nothing from the world."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from unsee.judges import ClassifierJudge, Judge, detects, group_of, knows, score, topk
from unsee.metrics.judged import FLAG, PromptResult, agreement, flagged, judge_prompts, mark
from unsee.world.data import labels, make_batch, scene_rng
from unsee.world.judge2 import evaluate_judge2, load_judge2
from unsee.world.oracle import GROUPS, HEADS, load_oracle
from unsee.world.protocols import class_rates, flagged_classes

SRC = Path(__file__).resolve().parent.parent / "src" / "unsee"
CORE = ("models", "sampling", "edits", "methods", "concepts", "impact", "attacks", "metrics", "judges")


@pytest.fixture(scope="module")
def oracle():
    return load_oracle()


@pytest.fixture(scope="module")
def renders():
    b = make_batch(scene_rng(3, 31, 0), 64, two_objects=False)
    return (b.images + 1) / 2, labels(b.scenes)


def test_the_oracle_is_a_judge_and_reads_renders_as_it_always_did(oracle, renders):
    x, lab = renders
    assert isinstance(oracle, Judge)
    assert set(oracle.groups) == set(HEADS) and oracle.groups["frame"] == ("no frame", "frame")
    names = [n for g in oracle.groups.values() for n in g]
    assert len(names) == len(set(names)), "concept names are unique across groups"
    with torch.no_grad():
        logits = oracle(x)
    top = topk(oracle, x, k=2)
    for g, names in GROUPS.items():
        own = [names[i] for i in logits[g].argmax(-1).tolist()]
        assert [r[0] for r in top[g]] == own  # the oracle's own answers, under the group's names
        truth = [names[i] for i in lab[g].argmax(-1).tolist()]
        assert sum(a == b for a, b in zip(own, truth)) >= 62, g
    assert oracle.topk(x, 2) == top
    for concept in ("hexagon", "teal", "striped", "frame", "no frame"):
        g = group_of(oracle, concept)
        assert detects(oracle, x, concept).tolist() == [r[0] == concept for r in top[g]]
        assert detects(oracle, x, concept, k=2).tolist() == [concept in r for r in top[g]]
        assert torch.allclose(score(oracle, x, concept), oracle.probs(x)[g][:, GROUPS[g].index(concept)])
    assert knows(oracle, "frame") and not knows(oracle, "yes")
    with pytest.raises(ValueError, match="does not know concept 'dog'.*hexagon"):
        detects(oracle, x, "dog")


def test_the_second_judge_is_a_judge_of_the_same_groups_and_reads_held_out_renders():
    judge2 = load_judge2()
    assert isinstance(judge2, Judge) and dict(judge2.groups) == GROUPS
    acc = evaluate_judge2(judge2, n=400, seed=123)
    assert set(acc) == set(GROUPS)
    for g, a in acc.items():
        assert a >= 0.95, (g, a)


def test_missing_second_judge_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="unsee world train-judge"):
        load_judge2(tmp_path / "nope")


def _colour_judge(name: str = "class") -> ClassifierJudge:
    """Reds and blues by the mean of the red and blue channels: any classifier is a judge."""
    return ClassifierJudge(
        lambda x: 20 * torch.stack([x[:, 0].mean((1, 2)), x[:, 2].mean((1, 2))], -1), ("reddish", "bluish"), name
    )


def test_a_classifier_judge_reads_generated_images(tiny_pipe):
    judge = _colour_judge()
    assert isinstance(judge, Judge) and judge.groups == {"class": ("reddish", "bluish")}
    res = judge_prompts(tiny_pipe, judge, ["a red circle", "a blue square"], n=2, steps=2, k=1, keep_images=True)
    assert [r.prompt for r in res] == ["a red circle", "a blue square"]
    for r in res:
        assert len(r.topk["class"]) == 2 and r.check is None
        expect = ["reddish" if im[0].mean() > im[2].mean() else "bluish" for im in r.images]
        assert [row[0] for row in r.topk["class"]] == expect
        assert r.rate("class", "reddish") + r.rate("class", "bluish") == 1.0
    with pytest.raises(ValueError, match="unknown judge group 'object'"):
        res[0].rate("object", "circle")
    with pytest.raises(ValueError, match="one judge"):
        res[0].agreement("class")
    with pytest.raises(ValueError, match="different concepts"):
        judge_prompts(tiny_pipe, judge, ["a red circle"], n=1, steps=2, check=_colour_judge("other"))
    checked = judge_prompts(tiny_pipe, judge, ["a red circle"], n=2, steps=2, check=judge)
    assert checked[0].agreement("class") == 1.0


class _Fixed:
    """A fake judge that says, per image, whatever its ``answers`` list says."""

    groups = {"object": ("circle", "hexagon", "square")}

    def __init__(self, answers: list[str]):
        self.answers = answers

    def probs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        idx = torch.tensor([self.groups["object"].index(a) for a in self.answers[: len(images)]])
        return {"object": torch.nn.functional.one_hot(idx, 3).float()}


def test_agreement_flags_the_class_the_judges_disagree_on():
    x = torch.zeros(10, 3, 8, 8)
    # on hexagons the judges disagree on 3 of 10 images (70% < 80%); on circles they agree on 9 of 10
    a_hex, b_hex = _Fixed(["hexagon"] * 10), _Fixed(["hexagon"] * 7 + ["circle"] * 3)
    a_cir, b_cir = _Fixed(["circle"] * 10), _Fixed(["circle"] * 9 + ["square"])
    assert isinstance(a_hex, Judge)

    def result(a, b, prompt):
        return PromptResult(prompt, topk(a, x, 1), None, topk(b, x, 1))

    res = {"circle": [result(a_cir, b_cir, "a circle")], "hexagon": [result(a_hex, b_hex, "a hexagon")]}
    assert agreement(res["hexagon"], "object") == pytest.approx(0.7)
    assert agreement(res["circle"], "object") == pytest.approx(0.9)
    assert flagged({"circle": 0.9, "hexagon": 0.7}) == ["hexagon"]
    assert flagged({"circle": 0.9, "hexagon": 0.7}, floor=0.95) == ["circle", "hexagon"]
    assert mark("hexagon", ["hexagon"]) == f"hexagon {FLAG}" and mark("circle", ["hexagon"]) == "circle"
    # the protocol's per-class rates carry the agreement, and the flag does not average it away
    topk_colour = {"colour": [["red"]] * 10}
    res = {c: [PromptResult(r.prompt, r.topk | topk_colour, None, r.check | topk_colour) for r in rs] for c, rs in res.items()}
    rates = class_rates(res)
    assert rates["hexagon"]["agreement"] == pytest.approx(0.7) and rates["hexagon"]["top1"] == 1.0
    assert flagged_classes(rates) == ["hexagon"]
    # two results of one class pool their images
    more = [*res["hexagon"], PromptResult("a hexagon", topk(a_hex, x, 1), None, topk(a_hex, x, 1))]
    assert agreement(more, "object") == pytest.approx(0.85)


def test_the_core_imports_nothing_from_the_world():
    """As `grep -rn "unsee.world" src/unsee/{models,sampling,edits,methods,concepts,impact,attacks,metrics,judges}*`."""
    pattern = re.compile(r"unsee.world")
    hits = []
    for name in CORE:
        paths = [*SRC.glob(f"{name}*.py"), *(p for d in SRC.glob(f"{name}*") if d.is_dir() for p in d.rglob("*"))]
        for path in paths:
            if path.is_file() and path.suffix in (".py", ".json", ".md", ".txt"):
                for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    if pattern.search(line):
                        hits.append(f"{path.relative_to(SRC)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)
