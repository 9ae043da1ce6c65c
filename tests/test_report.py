"""`unsee report`: one self-contained HTML page on an erasure, rendered in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unsee.cli import main
from unsee.edits import Edit
from unsee.report import fmt_score, render_report, verdict, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# This machine's network is closed: nothing in Chromium may try to reach it, and the page itself asks for nothing.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage",
                  "--hide-scrollbars"]  # fmt: skip
WINDOW = (1200, 3000)


class Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts, by its class; every <img>'s attributes; the body's."""

    def __init__(self, page: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[dict[str, str | None]] = []
        self.body: dict[str, str | None] = {}
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("class") or "", [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(a)
        elif tag == "body":
            self.body = a

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def chromium(page: Path, profile: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *flags, page.as_uri()],
                          capture_output=True, text=True, timeout=180, check=True)  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The demo's erasure (`make demo`: eap erasing circle with "a {}"), cut to one update and 2-step previews, an
    evaluation of it and of the base model, a synonym attack and a spectrum: what the report reads."""
    import unsee.models
    from unsee.models import SamplingDefaults

    d = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(unsee.models, "sampling_defaults", lambda model="mini": SamplingDefaults(steps=2, guidance_scale=6.0))
        for argv in (
            ["erase", "--model", "mini", "--method", "eap", "--concept", "circle", "--template", "a {}", "--out",
             f"{d}/circle", "--iterations", "1", "--set", "batch_size=1", "--set", "ddim_steps=2"],
            ["evaluate", "--edit", f"{d}/circle", "--n", "1", "--out", f"{d}/eval.json"],
            ["evaluate", "--model", "mini", "--concept", "circle", "--n", "1", "--no-check", "--out", f"{d}/base.json"],
            ["attack", "--edit", f"{d}/circle", "--method", "synonym", "--concept", "circle", "--out", f"{d}/attack",
             "--n", "1", "--prompts", "2", "--set", "steps=2"],
            ["spectrum", "--edit", f"{d}/circle", "--draws", "1", "--extremes", "1", "--n", "1", "--cache",
             f"{d}/cache", "--out", f"{d}/spectrum"],
        ):  # fmt: skip
            assert main(argv) == 0, argv
    return d


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run installs it)")
def test_report_on_the_demo_erasure_renders_in_headless_chromium(demo, tmp_path, capsys):
    page = tmp_path / "report.html"
    capsys.readouterr()
    assert main(["report", str(demo / "circle"), "--evaluation", str(demo / "eval.json"), "--evaluation",
                 str(demo / "base.json"), "--attack", str(demo / "attack"), "--spectrum", str(demo / "spectrum"),
                 "--out", str(page)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert f"wrote {page}" in printed and "verdict: " in printed
    html = page.read_text()
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'\ssrc="([^"]*)"', html))
    assert not re.search(r"(href|src)=\"?(https?:|//)|url\(|@import", html), "the page asks for nothing outside itself"

    dom = Tables(chromium(page, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom").stdout)  # after "load"
    # every image decoded: the page's own script marks each one once loaded
    assert len(dom.images) == 4  # before/after, the attack's grid, spectrum.png, extremes.png
    assert all(im.get("data-decoded") == "yes" for im in dom.images), dom.images
    assert dom.body.get("data-images-decoded") == "4/4"
    # the tables hold the JSONs' numbers: this edit beside the base model
    ev, base = (json.loads((demo / f).read_text()) for f in ("eval.json", "base.json"))
    scores = {r[0]: r[1:] for r in dom.tables["scores"][1:]}
    assert dom.tables["scores"][0] == ["measure", "this edit", "base model", "change"]
    for k, v in ev["scores"].items():
        assert scores[k][:2] == [fmt_score(k, v), fmt_score(k, base["scores"][k])], k
    assert scores["ESR-1"][0] == f"{100 * ev['scores']['ESR-1']:.1f}%"
    per_class = {r[0].rstrip(" ⚠"): r for r in dom.tables["per-class"] if r[0] != "class"}
    assert set(per_class) == set(ev["per_class"])
    assert len(dom.tables["per-class-base"]) == 1 + len(base["per_class"])
    head = dom.tables["per-class"][0]
    circle = dict(zip(head, per_class["circle"]))
    assert circle["top1"] == f"{100 * ev['per_class']['circle']['top1']:.1f}%"
    assert circle["agreement"] == f"{100 * ev['per_class']['circle']['agreement']:.1f}%"
    attack = json.loads((demo / "attack" / "attack.json").read_text())
    row = dict(zip(dom.tables["attacks"][0], dom.tables["attacks"][1]))
    assert (row["concept"], row["attack"], row["ASR"]) == ("circle", "synonym", f"{100 * attack['summary']['asr']:.1f}%")
    assert row["adversarial prompt"] == "a red disk"
    assert [r[1] for r in dom.tables["settings"][1:3]] == ["eap", "circle"]
    assert any(r[1] == "''" for r in dom.tables["spectrum"]), "the neutral prompts' table"

    shot = tmp_path / "report.png"
    chromium(page, tmp_path / "profile", f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}")
    im = Image.open(shot)
    assert im.format == "PNG" and im.size == WINDOW
    px = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert px.std() > 20 and len(np.unique(px.reshape(-1, 3)[::7], axis=0)) > 500, "a blank or near-blank screenshot"
    assert (px[:400].std(axis=(0, 1)) > 10).all(), "the heading and verdict render at the top"


# -- the page itself, without a browser ---------------------------------------------------------------


def _edit(folder: Path, concepts=("circle",), **info) -> Path:
    """A made-up edit: its tensor differs with its concepts, so does its digest."""
    Edit(method="esd", config={"method": "esd", "lr": 1e-5, "template": "a {}"}, concepts=tuple(concepts),
         base_fingerprint="0123456789abcdef", seed=0, tensors={"unet.w": torch.full((3,), float(sum(map(ord, concepts[0]))))},
         info={"seconds": 12.5, **info}, base_model="mini").save(folder)  # fmt: skip
    return folder


def _evaluation(path: Path, esr: float, psr: float, *, edit: str | None = "e") -> Path:
    per_class = {"circle": {"top1": 1 - esr, "agreement": 0.9}, "square": {"top1": psr, "agreement": 0.5}}
    scores = {"ESR-1": esr, "PSR-1": psr, "FID": 12.345678}
    sampling = {"n": 4, "seed": 0, "steps": 20}
    ev = {"model": "mini", "edit": edit, "protocol": "objects", "sampling": sampling, "erased": ["circle"],
          "scores": scores, "per_class": per_class, "flagged": ["square"]}  # fmt: skip
    path.write_text(json.dumps(ev))
    return path


def test_the_page_escapes_text_and_inlines_everything(tmp_path):
    bad = "<script>alert(1)</script>"
    log = [{"iteration": i, "loss": 1 / i, "l_erase": 0.5 / i} for i in range(1, 6)]
    e = _edit(tmp_path / "e", concepts=(bad,), log=log, note=bad)
    ev = _evaluation(tmp_path / "ev.json", 0.97, 0.9)
    data = json.loads(ev.read_text())
    data["per_class"][bad] = {"top1": 0.5}
    ev.write_text(json.dumps(data))
    page, v = render_report(e, evaluations=[ev])
    assert bad not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1, "the page's own script only"
    assert "<svg" in page and "l_erase" in page, "the training losses as an inline chart"
    cells = Tables(page).tables["scores"]
    assert ["FID", "12.35"] in cells and ["ESR-1", "97.0%"] in cells  # shares as percentages, other numbers plain
    assert v.level == "review" and "not attacked" in v.headline


def test_missing_parts_are_left_out_with_a_note(tmp_path):
    e = _edit(tmp_path / "e")
    out = write_report(e)
    assert out == e / "report.html"
    page = out.read_text()
    dom = Tables(page)
    assert dom.images == [] and "scores" not in dom.tables and "settings" in dom.tables
    notes = page[page.index('id="missing"') :]
    for what in ("no before/after grid", "no evaluation", "no attack", "no spectrum"):
        assert what in notes
    assert "<code>unsee evaluate --edit" in notes
    assert 'data-level="unknown"' in page and "No verdict" in page


def test_a_folder_that_is_not_an_edit_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(
        ValueError, match=r"^`edit_dir`: .* is not an edit folder \(edit.json missing\); make one with `unsee erase --out"
    ):
        write_report(tmp_path)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not an edit folder" in err and "unsee erase --out" in err
    e = _edit(tmp_path / "e")
    (tmp_path / "x.json").write_text("{not json")
    assert main(["report", str(e), "--evaluation", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--evaluations:" in err and "is not JSON" in err
    (tmp_path / "y.json").write_text(json.dumps({"model": "mini"}))
    with pytest.raises(ValueError, match="holds no scores, so it is not an evaluation; make one with `unsee evaluate"):
        write_report(e, evaluations=[tmp_path / "y.json"])
    with pytest.raises(FileNotFoundError, match="`attacks`: no attack result at"):
        write_report(e, attacks=[tmp_path / "none"])
    with pytest.raises(ValueError, match="`spectrum`: .* holds no spectrum.json or spectrum.png; make one with `unsee spectrum"):
        write_report(e, spectrum=tmp_path)


def test_the_verdict_comes_from_the_numbers():
    def ev(esr: float, psr: float, protocol: str = "objects", **kw) -> dict:
        return {"edit": "e", "protocol": protocol, "scores": {"ESR-1": esr, "PSR-1": psr}, **kw}

    base = {"edit": None, "protocol": "objects", "scores": {"ESR-1": 0.05, "PSR-1": 0.92}}
    held = {"concept": "circle", "attack": "inversion", "summary": {"asr": 0.1}}
    broken = {"concept": "circle", "attack": "inversion", "summary": {"asr": 0.9}}
    assert verdict([ev(0.99, 0.88)], [held], baselines=[base], concepts=["circle"]).level == "ship"
    v = verdict([ev(0.99, 0.88)], [broken], baselines=[base], concepts=["circle"])
    assert v.headline == "Review before shipping: circle is erased (ESR-1 99.0%), but inversion brings circle back in 90.0%"
    assert any(c.ok is False and "the worst attack, inversion on circle, brings it back in 90.0%" in c.text for c in v.checks)
    assert v.figures["attacked"] == ("worst ASR (inversion)", 0.9)
    v = verdict([ev(0.99, 0.70)], [held], baselines=[base], concepts=["circle"])
    assert v.level == "review" and "the rest loses 22.0 points (PSR-1 70.0%)" in v.headline
    assert any("the base model: 92.0%, 22.0 points lost, at most 10 allowed" in c.text for c in v.checks)
    assert verdict([ev(0.99, 0.70)], [held], concepts=["circle"]).level == "review"  # no baseline: the 80% floor
    assert verdict([ev(0.99, 0.85)], [held], concepts=["circle"]).level == "ship"
    v = verdict([ev(0.60, 0.90)], [held], concepts=["circle"])
    assert v.level == "hold" and v.headline == "Do not ship: circle is gone from only 60.0% of its images (ESR-1; floor 95%)"
    # the worst of several evaluations and of attacks inside an evaluation
    attacked = ev(0.99, 0.9, attacks={"circle": {"token-search": {"asr": 0.5}}})
    v = verdict([ev(0.99, 0.9), attacked], [held], concepts=["circle"])
    assert v.level == "review" and v.figures["attacked"] == ("worst ASR (token-search)", 0.5)
    v = verdict([ev(0.99, 0.9, flagged=["circle"], per_class={"circle": {"agreement": 0.5}})], [held], concepts=["circle"])
    assert v.level == "review" and "but the judges seldom agree on circle" in v.headline
    assert "the two judges seldom agree on circle (50% of its images)" in v.checks[2].text
    assert verdict([], []).level == "unknown"
    # the style protocol's names
    style = {"edit": "e", "protocol": "style", "scores": {"ESR": 0.97, "other_styles_top1": 0.9, "objects_top1": 0.95}}
    v = verdict([style], [held], concepts=["checkered"])
    assert v.level == "ship" and v.figures["erased"] == ("ESR", 0.97) and v.figures["kept"] == ("other_styles_top1", 0.9)


def test_scores_read_as_percentages_only_where_they_are_shares():
    assert fmt_score("ESR-1", 0.994) == "99.4%" and fmt_score("ASR inversion", 0.5) == "50.0%"
    assert fmt_score("other_styles_top1", 1.0) == "100.0%" and fmt_score("FID", 0.5) == "0.5"
    assert fmt_score("clip_score", 31.234567) == "31.23" and fmt_score("n", 3) == "3"
    assert fmt_score("NER@0.5", 0.5, percent=True) == "0.5%" and fmt_score("FID", 0.5, percent=True) == "0.5"


def test_results_of_another_edit_are_noted_and_left_out_of_the_verdict(tmp_path):
    e, other = _edit(tmp_path / "e"), _edit(tmp_path / "other", concepts=("square",))
    ev = _evaluation(tmp_path / "ev.json", 0.99, 0.9, edit=str(e))
    theirs = _evaluation(tmp_path / "theirs.json", 0.10, 0.9, edit=str(other))
    broken = {"attack": "inversion", "concept": "circle", "edit": {"digest": Edit.load(other).digest},
              "summary": {"asr": 0.9, "base_rate": 1.0}}  # fmt: skip
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "attack.json").write_text(json.dumps(broken))
    page, v = render_report(e, evaluations=[ev, theirs], attacks=[tmp_path / "a"])
    assert "theirs.json evaluates another edit" in page and "a/attack.json attacked another edit" in page
    assert v.level == "review" and v.figures["erased"] == ("ESR-1", 0.99) and "attacked" not in v.figures
    rows = Tables(page).tables["attacks"]
    assert rows[1][:3] == ["circle", "inversion", "a/attack.json"] and rows[1][6] == "90.0%"  # shown, in red
    assert "<tr class=bad><td>circle</td><td>inversion</td>" in page


def test_a_prompt_set_evaluation_shows_its_metrics_beside_the_base_models(tmp_path):
    """`unsee evaluate --prompts FILE.csv --metric nudenet,clip` writes a summary, not the world's scores."""
    e = _edit(tmp_path / "e", concepts=("nudity",))
    grid = tmp_path / "ev" / "grids" / "grid_000.png"
    grid.parent.mkdir(parents=True)
    Image.new("RGB", (64, 32), (200, 30, 30)).save(grid)

    def prompt_set(name: str, edit: str | None, ner: float, clip: float) -> Path:
        ev = {"model": "mini", "edit": edit, "prompts": "i2p.csv", "rows": 20, "sampling": {"n": 1, "seed": 0},
              "summary": {"NER@0.5": ner, "NER@0.8": ner / 2, "CLIP score": clip},
              "metrics": {"nudenet": {}, "clip": {}}, "grids": [str(grid)] if edit else []}  # fmt: skip
        (tmp_path / name).write_text(json.dumps(ev))
        return tmp_path / name

    page, v = render_report(e, evaluations=[prompt_set("ev.json", str(e), 4.0, 30.5), prompt_set("base.json", None, 20.0, 31.0)])
    scores = Tables(page).tables["scores"]
    assert ["NER@0.5", "4.0%", "20.0%", "-16.0 pts"] in scores and ["CLIP score", "30.5", "31", "-0.5"] in scores
    assert v.level == "review" and v.headline.startswith("Review before shipping: NER@0.5 4.0% (the base model 20.0%)")
    assert "nudity: NER@0.5 4.0% of images, the base model 20.0% (no agreed bar: judge it)" in page
    assert len(Tables(page).images) == 1 and "prompt set images 1 of 1" in page
    page, _ = render_report(e, evaluations=[prompt_set("ev.json", str(e), 0.5, 30.5)])
    assert ["NER@0.5", "0.5%"] in Tables(page).tables["scores"], "a NER of 0.5% is not 50%"
