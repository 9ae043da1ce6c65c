"""Metrics for real models (NudeNet, CLIP score, FID, LPIPS, a classifier judge) and prompt sets as CSV files.

CLIP and the classifier are random-weight models of the true architectures, built here and saved to folders, then
loaded through the metrics as a user's local folders would be; NudeNet is the real ONNX model of the nudenet wheel.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from unsee.cli import main
from unsee.images import to_pil
from unsee.judges import Judge, detects
from unsee.metrics import judged
from unsee.metrics.base import Metric, load_metric, metric_config, metrics
from unsee.metrics.lpips import CHECKPOINTS, Backbone

I2P_HEADER = ("prompt,categories,hard,inappropriate_percentage,nudity_percentage,q16_percentage,sd_safety_percentage,"
              "prompt_toxicity,lexica_url,sd_seed,sd_guidance_scale,sd_image_width,sd_image_height,sd_model,"
              "evaluation_seed,evaluation_guidance,case_number").split(",")  # fmt: skip
SHAPES = ("a red circle", "a blue square", "a green triangle", "a yellow hexagon", "a star on stripes")


def write_i2p(path: Path, rows: range) -> Path:
    """An I2P-layout CSV (the header of ESD's unsafe-prompts4703.csv) with mini-world prompts."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, I2P_HEADER)
        if new:
            w.writeheader()
        for i in rows:
            w.writerow({k: "" for k in I2P_HEADER} | dict(prompt=f"{SHAPES[i % 5]} {i}", categories="sexual", hard=0,
                       sd_seed=1000 + i, sd_guidance_scale=7, sd_image_width=512, sd_image_height=512, sd_model="1.4",
                       evaluation_seed=2000 + i, evaluation_guidance=7.5 if i % 2 else 6.0, case_number=i))  # fmt: skip
    return path


def pil_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float()[None] / 255


def test_the_registry_holds_every_metric_with_settings_that_round_trip():
    assert metrics() == ["classifier", "clip", "fid", "lpips", "nudenet"]
    c = metric_config("nudenet", thresholds=(0.5, 0.9))
    assert c.to_dict()["metric"] == "nudenet" and c.to_dict()["thresholds"] == [0.5, 0.9]
    with pytest.raises(ValueError, match="nudenet has no setting clip_model"):
        metric_config("nudenet", clip_model="x")
    with pytest.raises(ValueError, match="unknown metric 'nudity'; available: classifier, clip"):
        load_metric("nudity")


def made_nude_image(detector, *, target: float = 0.6, budget: int = 40) -> torch.Tensor:
    """An image NudeNet flags, made here by a black-box search on NudeNet's own score.

    Why a search and not a photo or gradients: no nude photograph ships with nudenet (wheel or repo) and none
    belongs in this repository; the gradient route (onnx2torch or onnx2pytorch converting ``320n.onnx`` to torch)
    needs torchvision, which does not import beside this torch. So the test draws a skin-toned disc with a darker
    centre and climbs NudeNet's highest EXPOSED score by random search (16 smooth perturbations per step, the best
    kept), reading only the real onnxruntime detector's outputs, until the score passes ``target``.
    """
    im = Image.new("RGB", (64, 64), (90, 60, 50))
    d = ImageDraw.Draw(im)
    d.ellipse((8, 12, 56, 60), fill=(225, 180, 150))
    d.ellipse((27, 31, 37, 41), fill=(170, 100, 90))
    x = pil_tensor(im)
    best = float(detector.nude_score(x)[0])
    g = torch.Generator().manual_seed(0)
    for _ in range(budget):
        if best > target:
            break
        noise = torch.nn.functional.interpolate(torch.randn(16, 3, 8, 8, generator=g), size=64, mode="bilinear")
        cand = (x + 0.15 * noise).clamp(0, 1)
        s = detector.nude_score(cand)
        i = int(s.argmax())
        if s[i] > best:
            best, x = float(s[i]), cand[i : i + 1]
    assert best > target, f"the search reached NudeNet score {best:.2f} only"
    return (x * 255).round() / 255  # what a saved 8-bit image holds


def test_nudenet_flags_the_image_made_to_be_nude_and_not_a_plain_one(mini_pipe):
    det = load_metric("nudenet")
    assert isinstance(det, Judge) and isinstance(det, Metric)
    nude = made_nude_image(det)
    plain = torch.full((1, 3, 64, 64), 0.5)
    g = torch.Generator().manual_seed(2000)
    from unsee.sampling import sample

    world = sample(mini_pipe, ["a red circle"], steps=20, guidance_scale=6.0, generator=g)  # a mini-world image
    # The real onnxruntime detector, as the nudenet package itself runs it on an 8-bit image file.
    from nudenet import NudeDetector

    bgr = [np.ascontiguousarray(np.array(to_pil(x)[0])[:, :, ::-1]) for x in (nude, plain, world)]  # NudeNet reads BGR
    raw = NudeDetector().detect_batch(bgr)
    exposed = [[d for d in dets if d["class"].endswith("_EXPOSED")] for dets in raw]
    assert max(d["score"] for d in exposed[0]) > 0.5 and not exposed[1] and not exposed[2]
    scores = det(["nude", "plain", "world"], [nude, plain, world])
    assert [r["nudenet_nude@0.5"] for r in scores.per_prompt] == [1.0, 0.0, 0.0]
    assert scores.summary["NER@0.5"] == pytest.approx(100 / 3)
    assert det.groups == {"nudity": ("not nude", "nude")}
    assert detects(det, torch.cat([nude, plain]), "nude").tolist() == [True, False]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    """A random-weight CLIP (true architecture, tiny widths) with the mini model's CLIP tokenizer, saved as a folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizerFast

    from unsee.models import BUNDLED

    tok = CLIPTokenizerFast.from_pretrained(BUNDLED["mini"] / "tokenizer")
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=tok.model_max_length),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                        image_size=32, patch_size=8),
                     projection_dim=16)  # fmt: skip
    folder = tmp_path_factory.mktemp("clip")
    CLIPModel(cfg).save_pretrained(folder)
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=proc, tokenizer=tok).save_pretrained(folder)
    return folder


def test_clip_score_is_100_cos_of_the_models_own_embeddings(clip_folder):
    from transformers import CLIPModel, CLIPProcessor

    metric = load_metric("clip", clip_model=str(clip_folder))
    images = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    texts = ["a red circle", "a blue square", "a green triangle", "stripes"]
    got = metric.scores(images, texts)
    model, proc = CLIPModel.from_pretrained(clip_folder).eval(), CLIPProcessor.from_pretrained(clip_folder)
    with torch.no_grad():
        px = proc(images=to_pil(images), return_tensors="pt").pixel_values
        ids = proc.tokenizer(texts, padding=True, return_tensors="pt")
        e_i = model.visual_projection(model.vision_model(pixel_values=px).pooler_output)
        e_t = model.text_projection(model.text_model(**ids).pooler_output)
    cos = (e_i / e_i.norm(dim=-1, keepdim=True) * e_t / e_t.norm(dim=-1, keepdim=True)).sum(-1)
    torch.testing.assert_close(got, (100 * cos).clamp(min=0), atol=1e-4, rtol=1e-4)
    s = metric(["a red circle", "stripes"], [images[:2], images[2:]])
    assert s.per_prompt[0]["clip_score"] == pytest.approx(metric.scores(images[:2], ["a red circle"] * 2).mean().item(), abs=1e-5)
    assert s.summary["CLIP score"] == pytest.approx(sum(r["clip_score"] for r in s.per_prompt) / 2, abs=1e-5)


def test_a_classifier_folder_is_a_judge_with_topk_rates(tmp_path):
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    labels = ["tench", "church", "parachute"]
    torch.manual_seed(0)
    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=3,
                       id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})  # fmt: skip
    ResNetForImageClassification(cfg).save_pretrained(tmp_path)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(tmp_path)
    judge = load_metric("classifier", classifier_model=str(tmp_path), classifier_labels=("church",), k=2)
    assert isinstance(judge, Judge) and judge.groups == {"class": tuple(labels)}
    images = torch.rand(6, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    p = judge.probs(images)["class"]
    assert p.shape == (6, 3) and torch.allclose(p.sum(-1), torch.ones(6))
    s = judge(["x"], [images])
    top = p.topk(2, dim=-1).indices
    assert s.per_prompt[0]["top1 church"] == pytest.approx((top[:, 0] == 1).float().mean().item())
    assert s.summary["top2 church"] == pytest.approx(100 * (top == 1).any(-1).float().mean().item())
    with pytest.raises(ValueError, match="no label 'dog'"):
        load_metric("classifier", classifier_model=str(tmp_path), classifier_labels=("dog",))


class TinyInception(torch.nn.Module):
    """Stands in for clean-fid's TorchScript Inception: same call, ``(x in [0, 255], return_features=True)``."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 5, stride=4)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        f = torch.tanh(self.conv(x / 255 - 0.5)).mean((-2, -1))
        return f if return_features else f.sum(-1)


def test_fid_is_torchmetrics_frechet_distance_on_the_named_inception(tmp_path):
    from scipy import linalg

    from unsee.images import save_images

    torch.manual_seed(0)
    net = torch.jit.script(TinyInception())
    net.save(str(tmp_path / "inception.pt"))
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(12, 3, 32, 32, generator=g)
    save_images(ref, tmp_path / "ref", [f"{i:02d}" for i in range(12)])
    fid = load_metric("fid", fid_inception=str(tmp_path / "inception.pt"), fid_reference=str(tmp_path / "ref"), size=64)
    fake = [torch.rand(5, 3, 32, 32, generator=g) ** 2 for _ in range(2)]
    got = fid(["a", "b"], fake).summary["FID"]

    def feats(x):
        with torch.no_grad():
            return fid.features((x * 255).round().to(torch.uint8)).double().numpy()

    a, b = feats(ref), feats(torch.cat(fake))
    covmean = linalg.sqrtm(np.cov(a, rowvar=False) @ np.cov(b, rowvar=False)).real
    want = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(np.cov(a, rowvar=False) + np.cov(b, rowvar=False) - 2 * covmean)
    assert got == pytest.approx(want, rel=1e-3, abs=1e-5) and got > 0
    assert fid(["a"], [ref]).summary["FID"] == pytest.approx(0, abs=1e-3)  # the reference against itself


def torchvision_problem() -> str | None:
    try:
        import torchvision  # noqa: F401
    except Exception as e:  # ImportError, or the RuntimeError of a build made for another torch
        return str(e) or type(e).__name__
    return None


def save_backbone(path: Path, net: str = "alex", seed: int = 0) -> Path:
    """A random-weight checkpoint in torchvision's layout (``features.*`` and a ``classifier.*`` the metric ignores)."""
    torch.manual_seed(seed)
    state = {f"features.{k}": v for k, v in Backbone(net).features.state_dict().items()}
    state["classifier.1.weight"] = torch.randn(10, 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def test_lpips_reads_torchvisions_checkpoint_and_is_a_distance(tmp_path):
    hub = tmp_path / "hub"
    save_backbone(hub / "checkpoints" / CHECKPOINTS["alex"])
    by_folder = load_metric("lpips", lpips_weights=str(hub))
    by_file = load_metric("lpips", lpips_weights=str(hub / "checkpoints" / CHECKPOINTS["alex"]), batch_size=2)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 64, 64, generator=g)
    noise = torch.randn(x.shape, generator=g)
    near, far = (x + 0.05 * noise).clamp(0, 1), (x + 0.3 * noise).clamp(0, 1)
    d_near = by_folder.distance(x, near)
    assert torch.equal(by_folder.distance(x, x), torch.zeros(5))
    assert torch.allclose(d_near, by_folder.distance(near, x)) and (d_near > 0).all()
    assert (by_folder.distance(x, far) > d_near).all()  # more noise, further
    assert torch.allclose(by_file.distance(x, near), d_near, atol=1e-6)  # batches of 2 = one batch of 5
    s = by_folder(["p", "q"], [near[:3], far[3:]], base=[x[:3], x[3:]])
    assert s.per_prompt[0]["lpips"] == pytest.approx(float(d_near[:3].mean()))
    assert s.summary["LPIPS"] == pytest.approx((s.per_prompt[0]["lpips"] + s.per_prompt[1]["lpips"]) / 2)
    other = load_metric("lpips", lpips_weights=str(save_backbone(tmp_path / "other.pth", seed=1)))
    assert not torch.allclose(other.distance(x, near), d_near)  # the checkpoint's weights are the ones used
    # the learned channel weights are torchmetrics' published ones, not random: its alex lin0 weights, loaded
    from torchmetrics.functional.image import lpips as tm

    lin = torch.load(Path(tm.__file__).parent / "lpips_models" / "alex.pth", map_location="cpu", weights_only=True)
    assert torch.equal(by_folder.lins[0].model[1].weight, lin["lin0.model.1.weight"])


def test_lpips_refuses_a_wrong_checkpoint_in_one_line(tmp_path):
    vgg = save_backbone(tmp_path / "vgg.pth", "vgg")
    for kw, words in ((dict(lpips_weights=str(vgg)), "not torchvision's alex checkpoint"),
                      (dict(lpips_weights=str(tmp_path)), "checkpoints/alexnet-owt-7be5be79.pth"),
                      (dict(lpips_weights=str(vgg), net="squeeze"), "unknown LPIPS `net` 'squeeze'")):  # fmt: skip
        with pytest.raises(ValueError, match="lpips_weights|net") as e:
            load_metric("lpips", **kw)
        assert words in str(e.value) and "\n" not in str(e.value)
    assert load_metric("lpips", lpips_weights=str(vgg), net="vgg").distance(*torch.rand(2, 1, 3, 32, 32)).shape == (1,)


@pytest.mark.skipif(torchvision_problem() is not None, reason="torchvision does not import beside this torch")
def test_lpips_equals_torchmetrics_lpips_on_the_same_backbone(tmp_path):
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    hub = tmp_path / "hub"
    save_backbone(hub / "checkpoints" / CHECKPOINTS["alex"])
    ours = load_metric("lpips", lpips_weights=str(hub))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        ref = LearnedPerceptualImagePatchSimilarity(net_type="alex", reduction="mean", normalize=True)
    finally:
        torch.hub.set_dir(old)
    a, b = torch.rand(2, 1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert float(ours.distance(a, b)) == pytest.approx(float(ref(a, b)), rel=1e-5)


def test_evaluate_lpips_is_zero_without_an_edit_and_positive_with_one(tmp_path):
    hub = tmp_path / "hub"
    save_backbone(hub / "checkpoints" / CHECKPOINTS["alex"])
    coco = tmp_path / "coco.csv"
    coco.write_text("caption,evaluation_seed\na red circle,5\na blue square,6\n")
    edit = tmp_path / "edit"
    assert main(["erase", "--method", "esd", "--concept", "circle", "--out", str(edit), "--no-preview",
                 "--iterations", "2", "--set", "batch_size=1", "--set", "ddim_steps=2"]) == 0  # fmt: skip
    got = {}
    for name, extra in (("plain", []), ("edited", ["--edit", str(edit)])):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "--prompts", str(coco), "--metric", "lpips", "--lpips-weights", str(hub), "--n", "2",
                     "--out", str(out), *extra]) == 0  # fmt: skip
        got[name] = json.loads(out.read_text())["summary"]["LPIPS"]
    assert got["plain"] == 0 and got["edited"] > 0


def test_missing_weights_name_the_flag_to_set(tmp_path, capsys):
    csv_path = write_i2p(tmp_path / "i2p.csv", range(2))
    for metric, flag in (("clip", "--clip-model"), ("classifier", "--classifier-model"), ("fid", "--fid-inception"),
                         ("lpips", "--lpips-weights")):  # fmt: skip
        assert main(["evaluate", "--prompts", str(csv_path), "--metric", metric, "--out", str(tmp_path / "e.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("unsee: error:") and "\n" not in err and flag in err, err
    assert main(["evaluate", "--prompts", str(csv_path), "--metric", "nudenet", "--nudenet-model", str(tmp_path / "x.onnx"),
                 "--out", str(tmp_path / "e.json")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "--nudenet-model" in err and "\n" not in err


def test_a_csv_without_a_prompt_column_names_the_flag_and_the_columns(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("text_en,evaluation_seed\nhello,1\n")
    assert main(["evaluate", "--prompts", str(bad), "--metric", "nudenet", "--out", str(tmp_path / "e.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--prompt-column" in err and "columns found: text_en, evaluation_seed" in err, err
    assert main(["evaluate", "--prompts", str(bad), "--prompt-column", "text_en", "--metric", "nudenet", "--limit", "1",
                 "--out", str(tmp_path / "e.json")]) == 0  # fmt: skip


REAL_SAMPLER = judged.prompt_images


class Counting:
    """Wraps the sampler :func:`unsee.metrics.judged.prompt_images`: counts the prompts it draws; can stop after a call."""

    def __init__(self, monkeypatch, stop_after: int | None = None):
        self.prompts: list[str] = []
        self.calls = 0
        real = REAL_SAMPLER

        def wrapped(pipe, prompts, **kw):
            if stop_after is not None and self.calls >= stop_after:
                raise KeyboardInterrupt
            self.calls += 1
            self.prompts += list(prompts)
            return real(pipe, prompts, **kw)

        monkeypatch.setattr(judged, "prompt_images", wrapped)


def test_evaluate_a_20_prompt_i2p_csv_with_nudenet_resumes_and_samples_only_new_rows(tmp_path, monkeypatch, capsys):
    csv_path = write_i2p(tmp_path / "i2p.csv", range(20))
    out = tmp_path / "eval.json"
    args = ["evaluate", "--prompts", str(csv_path), "--metric", "nudenet", "--batch-size", "8", "--out", str(out)]
    first = Counting(monkeypatch, stop_after=1)  # interrupted after its first batch of 8 prompts
    assert main(args) == 130  # Ctrl-C: one line, the finished batches kept
    assert "run the same command again" in capsys.readouterr().err
    assert len(first.prompts) == 8 and not out.exists()
    resumed = Counting(monkeypatch)
    assert main(args) == 0
    assert len(resumed.prompts) == 12 and not set(resumed.prompts) & set(first.prompts)
    report = json.loads(out.read_text())
    assert report["rows"] == 20 and set(report["summary"]) == {"NER@0.5", "NER@0.8"}
    assert report["weights_key"] and report["fingerprint"] and Path(report["grids"][0]).exists()
    with out.with_suffix(".csv").open() as f:
        per = list(csv.DictReader(f))
    assert len(per) == 20 and per[1]["seed"] == "2001" and float(per[0]["guidance_scale"]) == 6.0
    ner = 100 * sum(float(r["nudenet_score"]) > 0.5 for r in per) / 20
    assert report["summary"]["NER@0.5"] == pytest.approx(ner)

    again = Counting(monkeypatch)
    assert main(args) == 0 and again.prompts == []  # every image is in the cache
    write_i2p(csv_path, range(20, 23))
    added = Counting(monkeypatch)
    assert main(args) == 0
    assert sorted(added.prompts) == sorted(f"{SHAPES[i % 5]} {i}" for i in range(20, 23))
    with out.with_suffix(".csv").open() as f:
        per2 = list(csv.DictReader(f))
    assert per2[:20] == per and len(per2) == 23  # the first 20 rows read back from the cache


def test_a_coco_caption_csv_scored_by_clip_and_a_classifier_through_the_cli(tmp_path, clip_folder):
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    coco = tmp_path / "coco.csv"
    coco.write_text("case_number,image_id,id,caption,evaluation_seed\n0,9,1,a red circle,5\n1,9,2,a blue square,6\n")
    labels = ["circle", "square"]
    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1], layer_type="basic", num_labels=2,
                       id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})  # fmt: skip
    ResNetForImageClassification(cfg).save_pretrained(tmp_path / "cls")
    ConvNextImageProcessor(size={"shortest_edge": 32}).save_pretrained(tmp_path / "cls")
    out = tmp_path / "coco_eval.json"
    assert main(["evaluate", "--prompts", str(coco), "--metric", "clip,classifier", "--clip-model", str(clip_folder),
                 "--classifier-model", str(tmp_path / "cls"), "--classifier-label", "circle", "--n", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert {"CLIP score", "top1 circle", "top2 circle"} <= set(report["summary"]) and report["sampling"]["n"] == 2
    with out.with_suffix(".csv").open() as f:
        per = list(csv.DictReader(f))
    assert [r["prompt"] for r in per] == ["a red circle", "a blue square"] and [r["seed"] for r in per] == ["5", "6"]
    assert {"clip_score", "classifier_top1", "top1 circle"} <= set(per[0])
