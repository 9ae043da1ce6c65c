"""The sensitivity spectrum: zero for the identity edit, cache hits equal recomputes, batching equals a loop."""

from __future__ import annotations

import torch

from unsee.concepts.vocab import build_vocabulary
from unsee.impact.spectrum import make_draws, spectrum, spectrum_plain_loop
from unsee.methods import erase, make_config

WORDS = ["circle", "square", "star", "red", "blue", "striped", "picture", "shape"]


def test_identity_edit_scores_zero_everywhere(tiny_pipe, tmp_path):
    vocab = build_vocabulary(tiny_pipe, WORDS)
    draws = make_draws(tiny_pipe, 3, steps=3)
    spec = spectrum(tiny_pipe, None, vocab, draws, cache_dir=tmp_path)
    assert spec.words == tuple(WORDS)
    assert torch.equal(spec.scores, torch.zeros(len(WORDS)))


def test_cache_hit_equals_recompute_and_batching_equals_a_plain_loop(tiny_pipe, tmp_path):
    edit = erase(tiny_pipe, ["circle"], make_config("esd", iterations=2, batch_size=1, ddim_steps=2, lr=1e-2))
    vocab = build_vocabulary(tiny_pipe, WORDS)
    draws = make_draws(tiny_pipe, 3, steps=3)
    cold = spectrum(tiny_pipe, edit, vocab, draws, cache_dir=tmp_path, batch_size=5)
    assert len(list(tmp_path.glob("base-eps-*.pt"))) == 1
    warm = spectrum(tiny_pipe, edit, vocab, draws, cache_dir=tmp_path, batch_size=7)
    torch.testing.assert_close(warm.scores, cold.scores, rtol=1e-5, atol=1e-9)
    loop = spectrum_plain_loop(tiny_pipe, edit, WORDS, draws)
    torch.testing.assert_close(loop.scores, cold.scores, rtol=1e-4, atol=1e-9)
    assert (cold.scores <= 0).all() and (cold.scores < 0).any()
    order = cold.order()
    assert order[0][1] <= order[-1][1]
    assert 0 <= cold.percentile("picture") <= 100


DRIVER = """
import sys, torch
sys.path.insert(0, {tests!r})
from conftest import tiny_config
from unsee.concepts.vocab import build_vocabulary
from unsee.impact.spectrum import make_draws, spectrum
from unsee.methods import erase, make_config
from unsee.world.mini import build_components, make_pipeline
torch.set_num_threads(1)
pipe = make_pipeline(build_components(tiny_config()))
edit = erase(pipe, ["circle"], make_config("esd", iterations=2, batch_size=1, ddim_steps=2, lr=1e-2))
vocab = build_vocabulary(pipe, {words!r})
spec = spectrum(pipe, edit, vocab, make_draws(pipe, 3, steps=3), cache_dir={cache!r})
from accelerate import PartialState
if PartialState().is_main_process:
    torch.save(spec.scores, {out!r})
"""


def test_sharded_equals_single_process(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    tests = str(Path(__file__).parent)
    script = tmp_path / "driver.py"
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"scores{n}.pt"
        script.write_text(DRIVER.format(tests=tests, words=WORDS, cache=str(tmp_path / f"cache{n}"), out=str(out)))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(n),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        outs[n] = torch.load(out)
    torch.testing.assert_close(outs[2], outs[1], rtol=1e-5, atol=1e-9)


def test_spectrum_plot_labels_keep_clear_of_the_title_and_each_other():
    from unsee.impact.spectrum import Spectrum, spectrum_figure

    words = ["disk", "circle", "round", "oval", "ring", "hexagon", *[f"w{i}" for i in range(30)], "diamond", "spiky",
             "arrow", "plus", "star", "cross", "''", "'a picture'", "'an image'", "'a photo'"]  # fmt: skip
    scores = -torch.rand(len(words), generator=torch.Generator().manual_seed(0)) * 0.004
    scores[:6] = torch.tensor([-0.026, -0.0258, -0.015, -0.009, -0.0085, -0.006])  # a steep head, a flat tail near 0
    fig = spectrum_figure(Spectrum(tuple(words), scores, ("circle",), "esd"))
    ax = fig.axes[0]
    r = fig.canvas.get_renderer()
    labels = [t for t in ax.texts if t.get_text()]
    assert len(labels) >= 14  # 6 + 6 extremes (some of them neutral) and the 4 neutral prompts
    from matplotlib.text import Text

    boxes = [Text.get_window_extent(t, r) for t in labels]  # the text alone, not its line to the point
    title = ax.title.get_window_extent(r)
    for i, a in enumerate(boxes):
        assert not a.overlaps(title), labels[i].get_text()
        for j in range(i):
            assert not a.overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
