"""The object protocol on the mini model: erase 5 of 10 objects at once, 4 fixed splits.

Rows: the base model, esd, neutral, eap, eap-pgd; ESR/PSR mean ± std over the splits, wall time
per erasure, and EAP's time over ESD's measured in the same run. Each (method, split) result is
saved as it finishes, so an interrupted run continues where it stopped.

Run: `.venv/bin/python benchmarks/erasure.py` (writes benchmarks/results/erasure.{json,md}).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from unsee.methods import erase, make_config
from unsee.metrics.protocols import SPLITS, Sampling, class_rates, judge_objects, object_scores
from unsee.models import load_pipeline, sampling_defaults
from unsee.world import OBJECTS
from unsee.world.oracle import load_oracle

RESULTS = Path(__file__).parent / "results"

# Shared by every method so the comparison is fair: same iterations, batch, lr, z_t sampling and
# parameter set (cross-attention); each method adds only its own preservation mechanism.
COMMON = dict(params="xattn", iterations=200, lr=3e-4, batch_size=4, ddim_steps=10, sample_guidance=3.0, template="a {}")
SETTINGS: dict[str, dict] = {
    "esd": dict(eta=1.0),
    "neutral": dict(c_n="", lambda_=1.0),
    "eap": dict(eta=1.0, lambda_=1.0, n_centres=20, temperature=2.0, hard=True, logit_lr=1e-2),
    "eap-pgd": dict(eta=1.0, lambda_=1.0, pgd_lr=1e-2),
}


def _fmt(vals: list[float]) -> str:
    return f"{100 * np.mean(vals):.1f} ± {100 * np.std(vals):.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", nargs="+", default=list(SETTINGS))
    ap.add_argument("--splits", nargs="+", type=int, default=list(range(len(SPLITS))))
    ap.add_argument("--n", type=int, default=4, help="images per prompt (8 prompts per class)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override COMMON for every method")
    ap.add_argument("--out", default=str(RESULTS / "erasure"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    common = COMMON | {k: json.loads(v) if v[:1].isdigit() or v[:1] in "-[{" else v
                       for k, v in (s.split("=", 1) for s in args.set)}  # fmt: skip
    out = Path(args.out)
    parts = out.with_name(out.name + "_runs")
    parts.mkdir(parents=True, exist_ok=True)
    pipe, oracle = load_pipeline("mini"), load_oracle()
    d = sampling_defaults("mini")
    s = Sampling(n=args.n, seed=0, steps=d.steps, guidance_scale=d.guidance_scale)

    base_file = parts / "base.json"
    if not base_file.exists():
        base_file.write_text(json.dumps(class_rates(judge_objects(pipe, oracle, OBJECTS, s, progress=True))))
    base = json.loads(base_file.read_text())
    rows: dict[str, list[dict]] = {"base": [object_scores(base, SPLITS[i]) | {"seconds": 0.0} for i in args.splits]}
    for method in args.methods:
        rows[method] = []
        for i in args.splits:
            f = parts / f"{method}_split{i}.json"
            if not f.exists():
                cfg = make_config(method, **(common | SETTINGS[method]))
                t0 = time.perf_counter()
                edit = erase(pipe, list(SPLITS[i]), cfg, torch.Generator().manual_seed(i))
                seconds = time.perf_counter() - t0
                with edit.applied(pipe):
                    rates = class_rates(judge_objects(pipe, oracle, OBJECTS, s))
                res = object_scores(rates, SPLITS[i]) | {"seconds": seconds, "per_class": rates,
                                                         "config": cfg.to_dict()}  # fmt: skip
                for key in ("adversary", "final_nearest"):
                    if key in edit.info:
                        res[key] = edit.info[key]
                f.write_text(json.dumps(res, indent=1, default=str))
                print(method, i, {k: round(v, 3) for k, v in res.items() if isinstance(v, float)}, flush=True)
            rows[method].append(json.loads(f.read_text()))
    report = summarise(rows, common, args)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    out.with_suffix(".md").write_text(report["markdown"])
    print(report["markdown"])


def summarise(rows: dict[str, list[dict]], common: dict, args: argparse.Namespace) -> dict:
    keys = ["ESR-1", "ESR-3", "PSR-1", "PSR-3", "colour_preserved"]
    base_psr = np.mean([r["PSR-1"] for r in rows["base"]])
    table = ["| method | ESR-1 | ESR-3 | PSR-1 | PSR-3 | colour (preserved) | PSR-1 loss | s / erasure |",
             "|---|---|---|---|---|---|---|---|"]
    summary = {}
    for m, rs in rows.items():
        loss = base_psr - np.mean([r["PSR-1"] for r in rs])
        secs = np.mean([r["seconds"] for r in rs])
        summary[m] = {k: [r[k] for r in rs] for k in keys} | {"psr1_loss": float(loss), "seconds": float(secs)}
        table.append(f"| {m} | " + " | ".join(_fmt(summary[m][k]) for k in keys)
                     + f" | {100 * loss:.1f} | {secs:.0f} |")  # fmt: skip
    lines = ["# Object erasure on the mini model (5 of 10 objects at once, 4 splits)", "",
             f"Splits {list(args.splits)}; {args.n} images × 8 prompts per class; oracle top-k; mean ± std over splits.",
             f"Shared settings: `{json.dumps(common)}`; per method: `{json.dumps(SETTINGS)}`.", "", *table, ""]  # fmt: skip
    if "eap" in summary and "esd" in summary:
        ratio = summary["eap"]["seconds"] / summary["esd"]["seconds"]
        summary["eap_over_esd_time"] = ratio
        lines.append(f"EAP / ESD wall time per erasure (same run): {ratio:.2f}x")
        for other in ("esd", "neutral"):
            if other in summary and summary[other]["psr1_loss"] > 0:
                rel = summary["eap"]["psr1_loss"] / summary[other]["psr1_loss"]
                summary[f"eap_loss_over_{other}_loss"] = rel
                lines.append(f"EAP's PSR-1 loss / {other}'s: {rel:.2f}")
    summary["markdown"] = "\n".join(lines) + "\n"
    return summary


if __name__ == "__main__":
    main()
