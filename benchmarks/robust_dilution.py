"""Why hexagon comes back under the robust erasure (issue 25): the preservation, or the company it is erased in?

In the object protocol's split 1 (5 objects erased at once) the inversion attack brings hexagon back 62% of the time
against the robust method and 56% against EAP. Here hexagon is erased by itself and with circle, a round neighbour:

- ``eap``: plain EAP on {hexagon};
- ``robust``: the robust row of benchmarks/robust.py on {hexagon};
- ``robust-esd``: the same over ESD (``base="esd"``: no preservation term);
- ``robust+circle``: the robust row on {hexagon, circle};
- ``robust-po+circle``: the robust-po row (each concept's token erased on its own draws) on {hexagon, circle}.

Each edit is trained once (seed 1), scored on the object protocol (ESR / PSR, 4 images x 8 prompts per object), and
attacked by inversion at the fixed budget (300 steps, attack seed 0; 4 colour prompts x 8 seeds) on every erased
object, as benchmarks/robust.py does. Results are kept per row under
benchmarks/results/robust_dilution_runs/<fingerprint>/ (an interrupted run resumes; rows may run in separate
processes: ``--rows``). Writes benchmarks/results/robust_dilution.{json,md}.
Usage: python benchmarks/robust_dilution.py [--rows ROW ...] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from _report import write_report
from robust import COMMON, D_CE_SEED, RESULTS, ROWS, Plan, run_attack, synonyms_excluded
from unsee.edits import Edit
from unsee.methods import erase
from unsee.methods import make_config as method_config
from unsee.models import fingerprint, load_pipeline, sampling_defaults
from unsee.world import OBJECTS
from unsee.world.concepts import concept_images
from unsee.world.oracle import load_oracle
from unsee.world.protocols import Sampling, class_rates, judge_objects, object_scores

# row -> (benchmarks/robust.py's row, extra settings, the objects erased)
DILUTION: dict[str, tuple[str, dict, tuple[str, ...]]] = {
    "eap": ("eap", {}, ("hexagon",)),
    "robust": ("robust", {}, ("hexagon",)),
    "robust-esd": ("robust", {"base": "esd"}, ("hexagon",)),
    "robust+circle": ("robust", {}, ("hexagon", "circle")),
    "robust-po+circle": ("robust-po", {}, ("hexagon", "circle")),
}
SEED = 1  # the edits' training seed
SPLIT1_ROWS = ("eap", "robust", "robust-po")
"""benchmarks/robust.py's rows whose split-1 attack on hexagon the report quotes beside these."""


def split1_hexagon(fp: str) -> dict[str, float]:
    """Hexagon's inversion ASR in split 1 (erased with 4 other objects), from benchmarks/robust.py's kept attacks."""
    out = {}
    for row in SPLIT1_ROWS:
        f = RESULTS / "robust_runs" / fp / "attacks" / "split1" / row / "hexagon" / "inversion" / "attack.json"
        if f.exists():
            out[row] = json.loads(f.read_text())["summary"]["asr"]
    return out


def run_row(pipe, judge, folder: Path, row: str, plan: Plan) -> dict:
    base_row, extra, concepts = DILUTION[row]
    method, own = ROWS[base_row]
    cfg = method_config(method, **(COMMON | own | synonyms_excluded(method, concepts) | extra))
    edit_dir = folder / "edits" / row
    if (edit_dir / "edit.json").exists():
        edit = Edit.load(edit_dir)
    else:
        kw = {"images": [concept_images(c, plan.n_images, D_CE_SEED) for c in concepts]} if cfg.uses_images else {}
        t0 = time.perf_counter()
        edit = erase(pipe, list(concepts), cfg, torch.Generator().manual_seed(SEED), **kw)
        edit.save(edit_dir)
        (edit_dir / "seconds.json").write_text(json.dumps({"seconds": time.perf_counter() - t0}))
    f = folder / "scores" / f"{row}.json"
    if not f.exists() or json.loads(f.read_text())["edit_digest"] != edit.digest:
        d = sampling_defaults("mini")
        with edit.applied(pipe):
            rates = class_rates(judge_objects(pipe, judge, OBJECTS, Sampling(n=4, seed=0, steps=d.steps,
                                                                            guidance_scale=d.guidance_scale)))  # fmt: skip
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(object_scores(rates, concepts) | {"edit_digest": edit.digest, "per_class": rates}))
    asr = {c: run_attack(pipe, judge, edit, c, "inversion", folder / "attacks" / row / c, 8, plan).asr for c in concepts}
    scores = json.loads(f.read_text())
    return {"method": method, "settings": own | extra, "concepts": list(concepts), "edit_digest": edit.digest,
            "ESR-1": scores["ESR-1"], "PSR-1": scores["PSR-1"], "inversion_asr": asr}  # fmt: skip


def markdown(report: dict) -> str:
    md = ["# Why hexagon comes back under the robust erasure", "",
          f"Model `mini`, fingerprint `{report['model_fingerprint']}`. Each edit trained once (seed {SEED}) at "
          "benchmarks/robust.py's settings; inversion at the fixed budget (300 steps) on each erased object, 4 colour "
          "prompts x 8 seeds; ESR-1 / PSR-1 on the object protocol (PSR over the objects not erased).", "",
          "| row | erased | ESR-1 | PSR-1 | hexagon inversion ASR | circle inversion ASR |",
          "|---|---|---|---|---|---|"]  # fmt: skip
    for row, r in report["rows"].items():
        a = r["inversion_asr"]
        circle = f"{100 * a['circle']:.0f}%" if "circle" in a else "–"
        md.append(f"| {row} | {', '.join(r['concepts'])} | {100 * r['ESR-1']:.1f} | {100 * r['PSR-1']:.1f} | "
                  f"{100 * a['hexagon']:.0f}% | {circle} |")  # fmt: skip
    for row, v in report["split1_hexagon"].items():
        md.append(f"| {row}, split 1 (benchmarks/robust.py) | hexagon and 4 others | – | – | {100 * v:.0f}% | – |")
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", nargs="+", default=list(DILUTION), choices=list(DILUTION))
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    pipe = load_pipeline("mini")
    fp = fingerprint(pipe)
    folder = RESULTS / "robust_dilution_runs" / fp
    rows_dir = folder / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        judge, plan = load_oracle(), Plan()
        for row in args.rows:
            (rows_dir / f"{row}.json").write_text(json.dumps(run_row(pipe, judge, folder, row, plan), indent=1))
    rows = {r: json.loads((rows_dir / f"{r}.json").read_text()) for r in DILUTION if (rows_dir / f"{r}.json").exists()}
    report = {"model_fingerprint": fp, "seed": SEED, "rows": rows, "split1_hexagon": split1_hexagon(fp)}
    write_report(RESULTS / "robust_dilution", report, markdown(report))


if __name__ == "__main__":
    main()
