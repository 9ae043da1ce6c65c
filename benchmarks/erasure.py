"""The object protocol on the mini model: erase 5 of 10 objects at once, 4 fixed splits.

Rows: the base model, esd, neutral, eap, eap-pgd; ESR/PSR mean ± std over the splits, wall time
per erasure, and EAP's time over ESD's measured in the same run. Each (method, split) result is
saved as it finishes, so an interrupted run continues where it stopped.

Run: `.venv/bin/python benchmarks/erasure.py` (writes benchmarks/results/erasure.{json,md}).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from _report import write_report
from unsee.attacks import AttackResult
from unsee.cli import parse_key_values
from unsee.edits import Edit
from unsee.methods import config_class, erase, make_config
from unsee.models import fingerprint, load_pipeline, sampling_defaults
from unsee.world import OBJECTS, STYLE_WORDS
from unsee.world.captions import OBJECT_SYNONYMS, concept_words
from unsee.world.concepts import concept_images
from unsee.world.judge2 import load_judge2
from unsee.world.oracle import load_oracle
from unsee.world.protocols import SPLITS, Sampling, class_rates, flagged_classes, judge_objects, object_scores, style_scores

RESULTS = Path(__file__).parent / "results"

# Shared by every method so the comparison is fair: same iterations, batch, lr, z_t sampling and
# parameter set (cross-attention); each method adds only its own preservation mechanism.
COMMON = dict(params="xattn", iterations=200, lr=3e-4, batch_size=4, ddim_steps=10, sample_guidance=3.0, template="a {}")
# Row label -> (method, its own settings). "esd-gentle" is ESD tuned towards preservation (a third
# of the learning rate) to check that ESD's damage is not just over-training.
EAP = dict(eta=1.0, lambda_=1.0, k_nearest=1000, n_centres=100, temperature=2.0, hard=True, logit_lr=1e-2)
AGE = dict(
    eta=1.0,
    lambda_=1.0,
    k_nearest=1000,
    n_centres=100,
    temperature=2.0,
    topk=2,
    logit_lr=1e-2,
    target_words=tuple(concept_words()),
    n_targets=10,
    target_temperature=0.1,
    target_topk=2,
    target_lr=1e-2,
)
SETTINGS: dict[str, tuple[str, dict]] = {
    "esd": ("esd", dict(eta=1.0)),
    "esd-gentle": ("esd", dict(eta=1.0, lr=1e-4)),
    "neutral": ("neutral", dict(c_n="", lambda_=1.0)),
    "eap": ("eap", EAP | dict(adversary_latents="own")),  # as published: c_a gets its own partial DDIM
    "eap-pgd": ("eap-pgd", dict(eta=1.0, lambda_=1.0, pgd_lr=1e-2)),
    # EAP evaluating the preserved concept on the erased concept's z_t: one partial DDIM fewer.
    "eap-shared": ("eap", EAP | dict(adversary_latents="shared")),
    # No search: preserve the 8 concepts the shipped impact predictor ranks most affected (Idea 2).
    "eap-predicted": ("eap", EAP | dict(adversary="predicted", n_predicted=8, adversary_latents="own")),
    # Equation (11) over eap: learns from 32 renders of each erased object (benchmarks/robust.py attacks it).
    "robust": ("robust", EAP | dict(adversary_latents="own")),
    # UCE in closed form, its released settings (last token, erase/preserve scale 1, lamb 0.5, guide ""; no
    # preserve set, as in its Imagenette run); "-rest" also edits the positions after the concept's last token
    # (UCE's first code), and "-rest-keep" is told the split's 5 preserved objects (UCE's preserve set).
    # Equation (6), AGE: each erased object's own target, a Gumbel mixture (temperature 0.1, top-2, AGE's Imagenette
    # settings) over its 10 nearest world concepts, descending L1; adversaries as eap's R, soft top-2 draws.
    "age": ("age", AGE),
    # AGE as published draws its targets from class names only (Imagenette: the ImageNet class names); the world's
    # class names are its objects and their synonyms. "age" above also offers colours, styles and the shape families
    # ("angular" for triangle: a hypernym that still draws the erased shape).
    "age-objects": ("age", dict(AGE, target_words=tuple(w for ws in OBJECT_SYNONYMS.values() for w in ws))),
    "uce": ("uce", dict()),
    "uce-rest": ("uce", dict(positions="rest")),
    "uce-rest-keep": ("uce", dict(positions="rest")),
}


def _fmt(vals: list[float]) -> str:
    """Mean ± std over splits; a split without the value (an edit no longer kept to re-judge) is left out and counted."""
    have = [v for v in vals if not np.isnan(v)]
    if not have:
        return "–"
    note = f" ({len(have)} splits)" if len(have) < len(vals) else ""
    return f"{100 * np.mean(have):.1f} ± {100 * np.std(have):.1f}{note}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", nargs="+", default=["esd", "neutral", "eap", "eap-pgd"], choices=list(SETTINGS))
    ap.add_argument("--splits", nargs="+", type=int, default=list(range(len(SPLITS))))
    ap.add_argument("--n", type=int, default=4, help="images per prompt (8 prompts per class)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override COMMON for every method")
    ap.add_argument("--out", default=str(RESULTS / "erasure"))
    ap.add_argument("--note", default=None, help="a sentence the report must carry (e.g. how the machine was shared)")
    ap.add_argument("--style", default=None, help="also run the style protocol erasing this style (e.g. checkered)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("UNSEE_THREADS", "2")))  # 1 when sharing the machine
    common = COMMON | parse_key_values(args.set)
    out = Path(args.out)
    pipe, oracle, check = load_pipeline("mini"), load_oracle(), load_judge2()
    # Runs are kept per base model: retraining the mini model starts a fresh folder instead of
    # silently reusing results measured on the old weights.
    fp = fingerprint(pipe)
    parts = out.with_name(out.name + "_runs") / fp
    parts.mkdir(parents=True, exist_ok=True)
    d = sampling_defaults("mini")
    s = Sampling(n=args.n, seed=0, steps=d.steps, guidance_scale=d.guidance_scale)

    base_file = parts / "base.json"
    if not base_file.exists():
        base_file.write_text(json.dumps(class_rates(judge_objects(pipe, oracle, OBJECTS, s, progress=True, check=check))))
    base = json.loads(base_file.read_text())
    rows: dict[str, list[dict]] = {
        "base": [object_scores(base, SPLITS[i]) | {"seconds": 0.0, "per_class": base} for i in args.splits]
    }
    # Split-major order: every method's erasure of a split runs back to back, so a slow spell of the
    # machine cannot bias the time ratio between methods.
    rows.update({label: [] for label in args.methods})
    for i in args.splits:
        for label in args.methods:
            f = parts / f"{label}_split{i}.json"
            cfg = make_config(SETTINGS[label][0], **settings(label, common, SPLITS[i]))
            shared = shared_edit(parts, label, i, cfg)
            if f.exists() and "edit_digest" not in json.loads(f.read_text()):
                kept = parts / "edits" / f"{label}_split{i}"
                if (kept / "edit.json").exists():  # saved by the same run that scored it: its digest names it
                    f.write_text(json.dumps(json.loads(f.read_text()) | {"edit_digest": Edit.load(kept).digest}, indent=1))
                elif shared is not None:  # score the edit that was attacked instead (same settings and seed)
                    f.unlink()
            if not f.exists():
                t0 = time.perf_counter()
                if shared is not None:
                    edit, seconds = shared
                else:
                    ims = {"images": [concept_images(c, 32, seed=0) for c in SPLITS[i]]} if cfg.uses_images else {}
                    edit = erase(pipe, list(SPLITS[i]), cfg, torch.Generator().manual_seed(i), **ims)
                    seconds = time.perf_counter() - t0
                edit.save(parts / "edits" / f"{label}_split{i}")  # benchmarks/attacks.py attacks these same edits
                with edit.applied(pipe):
                    rates = class_rates(judge_objects(pipe, oracle, OBJECTS, s, check=check))
                res = object_scores(rates, SPLITS[i]) | {"seconds": seconds, "per_class": rates,
                                                         "config": cfg.to_dict(), "edit_digest": edit.digest}  # fmt: skip
                for key in ("adversary", "final_nearest", "R"):
                    if key in edit.info:
                        res[key] = edit.info[key]
                f.write_text(json.dumps(res, indent=1, default=str))
                print(label, i, {k: round(v, 3) for k, v in res.items() if isinstance(v, float)}, flush=True)
            rows[label].append(strict(f, parts / "edits" / f"{label}_split{i}", pipe, oracle, s, SPLITS[i]))
    rows["base"] = [strict_base(parts, pipe, oracle, s, SPLITS[i]) for i in args.splits]
    report = summarise(rows, common, args, fp)
    if args.style:
        report["style"] = style_rows(pipe, oracle, s, args, common, parts)
        report["markdown"] += report["style"]["markdown"]
    if args.note:
        report["note"] = args.note
        report["markdown"] += f"\nNote: {args.note}\n"
    write_report(out, report, report["markdown"], default=str)


def strict(f: Path, edit_dir: Path, pipe, oracle, s: Sampling, erased) -> dict:
    """The row of ``f``, with what each erased class's prompts draw (ESR-1-strict: an escape into another erased
    concept fails). Rows scored before that was recorded are re-judged on their erased classes, from the kept edit and
    the same seeds (the images are the same: their top-1 rate must come out as recorded)."""
    res = json.loads(f.read_text())
    if "ESR-1-strict" in res or not (edit_dir / "edit.json").exists():
        return res
    with Edit.load(edit_dir).applied(pipe):
        again = class_rates(judge_objects(pipe, oracle, list(erased), s))
    for o in erased:
        if abs(again[o]["top1"] - res["per_class"][o]["top1"]) > 1e-9:
            raise RuntimeError(f"{f}: re-judging {o} gave top-1 {again[o]['top1']}, not the recorded "
                               f"{res['per_class'][o]['top1']}; the run is not reproducible, re-score it")  # fmt: skip
        res["per_class"][o]["drawn"] = again[o]["drawn"]
    res |= object_scores(res["per_class"], erased)
    f.write_text(json.dumps(res, indent=1, default=str))
    return res


def strict_base(parts: Path, pipe, oracle, s: Sampling, erased) -> dict:
    f = parts / "base.json"
    base = json.loads(f.read_text())
    if any("drawn" not in r for r in base.values()):
        again = class_rates(judge_objects(pipe, oracle, OBJECTS, s))
        base = {o: r | {"drawn": again[o]["drawn"]} for o, r in base.items()}
        f.write_text(json.dumps(base))
    return object_scores(base, erased) | {"seconds": 0.0, "per_class": base}


def shared_edit(parts: Path, label: str, i: int, cfg) -> tuple[Edit, float] | None:
    """The edit benchmarks/robust.py trained for this row and split with the same settings and seed (it attacks
    what it trains), with its seconds; None when there is none. Reusing it puts its ASR in this table."""
    folder = RESULTS / "robust_runs" / parts.name / "edits" / f"{label}_split{i}"
    if not (folder / "edit.json").exists() or not (folder / "seconds.json").exists():
        return None
    edit = Edit.load(folder)
    if edit.seed != i or not same_settings(edit.config, cfg):
        return None
    return edit, json.loads((folder / "seconds.json").read_text())["seconds"]


def same_settings(saved: dict, cfg) -> bool:
    """Whether an edit saved with config ``saved`` was trained with ``cfg`` (compared as JSON, so tuples are lists;
    a setting the edit predates counts at its default, which is what the code did before the setting existed)."""
    want = json.loads(json.dumps(cfg.to_dict()))
    default = json.loads(json.dumps(type(cfg)().to_dict()))
    return all(saved.get(k, default[k]) == v for k, v in want.items())


def attack_index(fp: str) -> dict[str, dict[str, list[float]]]:
    """Edit digest -> attack -> ASR of every object attacked at the budgets the attacks benchmark fixed
    (inversion 300 steps, token search 160, seed 0), from benchmarks/attacks.py's and benchmarks/robust.py's runs."""
    index: dict[str, dict[str, list[float]]] = {}
    seen: set[tuple[str, str, str]] = set()  # both benchmarks may attack one edit (same seeds: the same result)
    for runs in ("attacks_runs", "robust_runs"):
        for f in sorted((RESULTS / runs / fp).glob("**/attack.json")):
            d = json.loads(f.read_text())
            c = d["config"]
            fixed = {"inversion": c.get("inversion_steps") == 300 and c.get("n_vectors") == 1,
                     "token-search": c.get("search_steps") == 160}.get(d["attack"], False)  # fmt: skip
            key = (d["edit"]["digest"], d["concept"], d["attack"])
            if fixed and c.get("seed", 0) == 0 and f.parent.name in ("inversion", "token-search") and key not in seen:
                seen.add(key)
                asr = AttackResult.load(f.parent, learned=False).asr
                index.setdefault(d["edit"]["digest"], {}).setdefault(d["attack"], []).append(asr)
    return index


def settings(label: str, common: dict, erased) -> dict:
    """A row's settings for erasing ``erased``: the shared ones its config has (a closed form has no iterations),
    its own, and the per-split ones."""
    method, own = SETTINGS[label]
    known = set(config_class(method)().to_dict())
    keep = {"preserve": tuple(o for o in OBJECTS if o not in erased)} if label.endswith("-keep") else {}
    return {k: v for k, v in common.items() if k in known} | own | synonyms_excluded(method, erased) | keep


def synonyms_excluded(method: str, erased) -> dict:
    """EAP never preserves another name of an erased concept (preserving "disk" would undo "circle")."""
    if method not in ("eap", "robust", "age"):
        return {}
    names = {**OBJECT_SYNONYMS, **STYLE_WORDS}
    return {"exclude": tuple(w for c in erased for w in names.get(c, (c,)))}


def style_rows(pipe, oracle, s: Sampling, args, common: dict, parts: Path) -> dict:
    """Erase one style (all methods, one erasure each); success on every synonym, preservation elsewhere."""
    rows = {}
    f = parts / f"style_{args.style}_base.json"
    if not f.exists():
        f.write_text(json.dumps(style_scores(pipe, oracle, args.style, s) | {"seconds": 0.0}))
    rows["base"] = json.loads(f.read_text())
    for label in args.methods:
        method, own = SETTINGS[label]
        f = parts / f"style_{args.style}_{label}.json"
        if not f.exists():
            cfg = make_config(method, **(settings(label, common, [args.style]) | {"template": "a {} pattern"}))
            t0 = time.perf_counter()
            ims = {"images": [concept_images(args.style, 32, seed=0)]} if cfg.uses_images else {}
            edit = erase(pipe, [args.style], cfg, torch.Generator().manual_seed(0), **ims)
            seconds = time.perf_counter() - t0
            with edit.applied(pipe):
                f.write_text(json.dumps(style_scores(pipe, oracle, args.style, s) | {"seconds": seconds}))
        rows[label] = json.loads(f.read_text())
    keys = [k for k in rows["base"] if k != "seconds"]
    lines = ["", f"## Style protocol: erase `{args.style}` (one erasure per method, seed 0)", "",
             "| method | " + " | ".join(keys) + " | s |", "|---" * (len(keys) + 2) + "|"]  # fmt: skip
    for m, r in rows.items():
        lines.append(f"| {m} | " + " | ".join(f"{100 * r[k]:.1f}" for k in keys) + f" | {r['seconds']:.0f} |")
    return {"rows": rows, "markdown": "\n".join(lines) + "\n"}


def summarise(rows: dict[str, list[dict]], common: dict, args: argparse.Namespace, fp: str) -> dict:
    keys = ["ESR-1", "ESR-1-strict", "ESR-3", "PSR-1", "PSR-3", "colour_preserved"]
    base_psr = np.mean([r["PSR-1"] for r in rows["base"]])
    table = [
        "| method | ESR-1 | ESR-1 strict | ESR-3 | PSR-1 | PSR-3 | colour (preserved) | PSR-1 loss | inversion ASR (objects) "
        "| token-search ASR (objects) | s / erasure |",
        "|---" * 11 + "|",
    ]
    summary = {}
    index = attack_index(fp)
    for m, rs in rows.items():
        loss = base_psr - np.mean([r["PSR-1"] for r in rs])
        secs = np.mean([r["seconds"] for r in rs])
        summary[m] = {k: [r.get(k, np.nan) for r in rs] for k in keys} | {"psr1_loss": float(loss), "seconds": float(secs)}
        asr = {}
        for a in ("inversion", "token-search"):
            got = [v for r in rs for v in index.get(r.get("edit_digest", ""), {}).get(a, [])]
            asr[a] = {"mean": float(np.mean(got)), "objects": len(got)} if got else None
        summary[m]["asr"] = asr
        cells = [f"{100 * x['mean']:.1f} ({x['objects']})" if x else "–" for x in asr.values()]
        table.append(f"| {m} | " + " | ".join(_fmt(summary[m][k]) for k in keys)
                     + f" | {100 * loss:.1f} | " + " | ".join(cells) + f" | {secs:.0f} |")  # fmt: skip
    lines = ["# Object erasure on the mini model (5 of 10 objects at once, 4 splits)", "",
             f"Model: `mini`, fingerprint `{fp}`. Splits {list(args.splits)}; {args.n} images × 8 prompts per class; "
             "oracle top-k; mean ± std over splits. ESR-1 strict counts an erased prompt that draws another of the "
             "split's erased objects as a failure (ESR-1 counts it a success). "
             "ASR: mean over the erased objects attacked on these very edits "
             "(benchmarks/attacks.py, benchmarks/robust.py) at the fixed budgets (inversion 300 steps, token search 160), "
             "judged by the oracle on 4 colour prompts x 8 seeds; the count says how many of the row's objects were "
             "attacked.",
             f"Shared settings: `{json.dumps(common)}`; per row: `{json.dumps(SETTINGS)}`.", "", *table, ""]  # fmt: skip
    for label in [m for m in summary if m.startswith("eap") and m != "eap-pgd"]:
        if "esd" in summary:
            ratio = summary[label]["seconds"] / summary["esd"]["seconds"]
            summary[f"{label}_over_esd_time"] = ratio
            lines.append(f"{label} / esd wall time per erasure (same run): {ratio:.2f}x")
        for other in ("esd", "neutral"):
            if other in summary and summary[other]["psr1_loss"] > 0:
                rel = summary[label]["psr1_loss"] / summary[other]["psr1_loss"]
                summary[f"{label}_loss_over_{other}_loss"] = rel
                lines.append(f"{label}'s PSR-1 loss / {other}'s: {rel:.2f}")

    # An erased class's images show no object for the judges to agree on: only the classes a split
    # preserves (every class for the base model) are checked.
    def kept(m: str, i: int, r: dict) -> dict:
        return {k: v for k, v in r.get("per_class", {}).items() if m == "base" or k not in SPLITS[i]}

    flags = {m: sorted({c for i, r in zip(args.splits, rs) for c in flagged_classes(kept(m, i, r))}) for m, rs in rows.items()}
    summary["flagged"] = flags
    if any(flags.values()):
        lines += ["", "Preserved classes where the oracle and the second judge agree on fewer than 80% of the generated "
                  "images in some split (⚠, their PSR rests on the oracle alone; splits measured without the second judge "
                  "count for none): " + "; ".join(f"{m}: {', '.join(f)}" for m, f in flags.items() if f) + "."]  # fmt: skip
    else:
        lines += ["", "No per-class agreement in these runs (made before the second judge): see benchmarks/results/judges.md "
                  "for the classes the judges disagree on in the base model's images (square, hexagon, star)."]  # fmt: skip
    summary["markdown"] = "\n".join(lines) + "\n"
    summary["model_fingerprint"] = fp
    return summary


if __name__ == "__main__":
    main()
