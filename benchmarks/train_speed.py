"""What retraining the mini model costs on this machine.

Runs the real trainer (`unsee world train`'s `train_mini`) for a few steps of every stage of a recipe
(the shipped defaults unless `--set KEY=VALUE`), reads its own stage clocks, and projects the full run:
vae_steps x s(VAE) + text_pretrain_steps x s(pretext) + steps x s(UNet). The UNet rate is taken after
`--warmup` steps, over a resumed run, so first-step costs are left out (and the final export).
Writes benchmarks/results/train_speed.{json,md}. Run: `.venv/bin/python benchmarks/train_speed.py`
(about 3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from _report import write_report
from unsee.cli import parse_key_values
from unsee.machine import describe
from unsee.models import BUNDLED
from unsee.world.mini import MiniConfig, train_mini

RESULTS = Path(__file__).parent / "results"
SHOWN = ("steps", "vae_steps", "text_pretrain_steps", "batch_size", "freeze_text_encoder", "prediction_type")


def recipe_overrides(items: list[str]) -> dict:
    """``--set`` pairs, which must name MiniConfig fields."""
    out, known = parse_key_values(items), {f.name for f in fields(MiniConfig)}
    if unknown := sorted(set(out) - known):
        raise SystemExit(f"unknown MiniConfig field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return out


def stage_clocks(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=False)["state"]["stage_seconds"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="the recipe: MiniConfig fields to change")
    ap.add_argument("--vae-steps", type=int, default=20, help="VAE steps to time")
    ap.add_argument("--pretext-steps", type=int, default=30, help="pretext-task steps to time (when the recipe has any)")
    ap.add_argument("--warmup", type=int, default=3, help="UNet steps before the clock")
    ap.add_argument("--unet-steps", type=int, default=25, help="UNet steps timed")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(RESULTS / "train_speed"))
    args = ap.parse_args()
    recipe = replace(MiniConfig(), **recipe_overrides(args.set))
    probe = replace(recipe, vae_steps=args.vae_steps, text_pretrain_steps=min(args.pretext_steps, recipe.text_pretrain_steps),
                    checkpoint_every=10**9, export_every=10**9, keep_exports=False)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        train_mini(replace(probe, steps=args.warmup), run, device=args.device, progress=True)
        before = stage_clocks(run)
        train_mini(replace(probe, steps=args.warmup + args.unet_steps), run, device=args.device, resume=True, progress=True)
        after = stage_clocks(run)
    per_step = {k: v["seconds"] / v["steps"] for k, v in before.items() if k != "unet"}
    per_step["unet"] = (after["unet"]["seconds"] - before["unet"]["seconds"]) / (after["unet"]["steps"] - before["unet"]["steps"])
    steps = {"vae": recipe.vae_steps, "text_pretrain": recipe.text_pretrain_steps, "unet": recipe.steps}
    projected = {k: steps[k] * per_step.get(k, 0.0) for k in steps}
    shipped = json.loads((Path(BUNDLED["mini"]) / "unsee.json").read_text()).get("training", {})
    report = {
        "machine": describe(args.device),
        "device": args.device,
        "recipe": {k: v for k, v in asdict(recipe).items() if k in SHOWN or k in recipe_overrides(args.set)},
        "timed_steps": {"vae": args.vae_steps, "text_pretrain": probe.text_pretrain_steps, "unet": args.unet_steps},
        "seconds_per_step": per_step,
        "projected_seconds": {**projected, "total": sum(projected.values())},
        "shipped_model_training": {k: shipped[k] for k in ("steps", "elapsed_s", "machine", "runs") if k in shipped},
    }
    write_report(args.out, report, to_markdown(report), indent=1)


def _hm(seconds: float) -> str:
    return f"{int(seconds // 3600)} h {round(seconds % 3600 / 60):02d} min"


def to_markdown(r: dict) -> str:
    m = r["machine"]
    where = m.get("gpu") or f"{m['cpu']} ({m['cpu_simd']}, {m.get('cpu_mhz', '?')} MHz), {m['cpu_cores']} cores"
    lines = [f"# Retraining the mini model: cost on {where}", "",
             f"torch {m['torch']}, {m['torch_threads']} threads; recipe {json.dumps(r['recipe'])}.", "",
             "| stage | steps in the recipe | s / step (timed steps) | projected |", "|---|---|---|---|"]  # fmt: skip
    for k, label in (("vae", "VAE"), ("text_pretrain", "text pretext task"), ("unet", "UNet")):
        n = r["recipe"].get({"vae": "vae_steps", "unet": "steps"}.get(k, "text_pretrain_steps"), 0)
        s = r["seconds_per_step"].get(k)
        lines.append(f"| {label} | {n} | {s:.3f} ({r['timed_steps'][k]}) | {_hm(r['projected_seconds'][k])} |" if s else
                     f"| {label} | {n} | – | – |")  # fmt: skip
    lines.append(f"| **total** | | | **{_hm(r['projected_seconds']['total'])}** (goal: ≤ 2 h on 2 CPU cores) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
