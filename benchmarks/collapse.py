"""The collapse of erased concepts (the talk's Idea 1), as the number erased at once grows: 1, 2, 5, 10.

Erasing every concept towards one neutral c_n may send them all to one output. Two measures, each against the
base model from the same seeds:

- the **collapse index**: how much closer the images of two erased concepts of one kind (two objects, two colours,
  two styles) come, prompt for prompt and seed for seed: 1 - D_edit / D_base, with D the mean RMS pixel distance over
  pairs (0: as distinct as the base model draws them; 1: identical images). It needs two concepts of one kind to
  compare, so one erased concept has none;
- the **concentration**: the share of the erased concepts' images (pooled per kind) whose oracle top-1 is the single
  most common label: 1/k for k concepts the base model draws faithfully, 1 when every erased prompt draws one thing.

And, per erasure, where the erased prompts go: the oracle's top-1 over its classes for each erased prompt (the escape
matrix), with ESR-1 and ESR-1 strict (a draw of any erased concept fails). Rows: neutral (one c_n for all), esd, eap,
age (equation 6), at the erasure benchmark's shared settings. Runs cache per model fingerprint and resume.
Usage: python benchmarks/collapse.py [--methods ...] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from _report import write_report
from erasure import COMMON, SETTINGS, settings
from unsee.concepts.prompts import with_article
from unsee.edits import Edit
from unsee.images import image_grid
from unsee.methods import erase, make_config
from unsee.metrics.judged import judge_prompts
from unsee.models import fingerprint, load_pipeline
from unsee.world import COLOUR_NAMES, OBJECTS
from unsee.world.oracle import load_oracle

RESULTS = Path(__file__).parent / "results"
# Nested sets: objects, colours and styles; each kind has two or more members from 5 concepts on.
SETS: dict[int, tuple[str, ...]] = {
    1: ("circle",),
    2: ("circle", "square"),
    5: ("circle", "square", "star", "red", "blue"),
    10: ("circle", "square", "star", "triangle", "red", "blue", "green", "striped", "dotted", "checkered"),
}
ESCAPE = ("circle", "square", "star")
"""The erasure whose escape matrix the issue asks for."""
HOSTS = ("ring", "oval", "diamond", "cross")
"""Objects no set erases: what colour and style prompts draw."""
STYLES = ("plain", "striped", "dotted", "checkered")


def kind(concept: str) -> str:
    return "object" if concept in OBJECTS else "colour" if concept in COLOUR_NAMES else "background"


def prompts(concept: str) -> list[str]:
    """The concept's prompts; prompt i of every concept of one kind differs only in the concept (same seed i)."""
    if kind(concept) == "object":
        return [with_article(f"{c} {concept}") for c in COLOUR_NAMES]
    if kind(concept) == "colour":
        return [with_article(f"{concept} {o}") for o in HOSTS]
    return [f"{with_article(f'{c} {o}')} on {with_article(concept)} background" for o, c in zip(HOSTS, COLOUR_NAMES[::2])]


def measure(pipe, oracle, concepts, n: int, seed: int) -> dict:
    """Per concept: its images (kept for the distances and the grid) and the oracle's top-1 on its kind."""
    out = {}
    for c in concepts:
        res = judge_prompts(pipe, oracle, prompts(c), n=n, seed=seed, k=1, keep_images=True)
        tops = [row[0] for r in res for row in r.topk[kind(c)]]
        out[c] = {"images": torch.stack([r.images for r in res]), "tops": tops,
                  "drawn": {k: v / len(tops) for k, v in Counter(tops).most_common()}}  # fmt: skip
    return out


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over prompts and seeds of the RMS pixel difference of two concepts' images from the same seeds."""
    return float(((a - b) ** 2).flatten(2).mean(-1).sqrt().mean())


def scores(m: dict, base: dict, concepts) -> dict:
    by_kind: dict[str, list[str]] = {}
    for c in concepts:
        by_kind.setdefault(kind(c), []).append(c)
    out: dict = {"per_kind": {}}
    collapse = []
    for k, cs in by_kind.items():
        pairs = [(a, b) for i, a in enumerate(cs) for b in cs[i + 1 :]]
        row: dict = {"concepts": cs}
        if pairs:
            d_edit = np.mean([distance(m[a]["images"], m[b]["images"]) for a, b in pairs])
            d_base = np.mean([distance(base[a]["images"], base[b]["images"]) for a, b in pairs])
            row |= {"d_edit": float(d_edit), "d_base": float(d_base), "collapse": float(1 - d_edit / d_base)}
            collapse.append(row["collapse"])
        pooled = [t for c in cs for t in m[c]["tops"]]
        pooled_base = [t for c in cs for t in base[c]["tops"]]
        row["concentration"] = Counter(pooled).most_common(1)[0][1] / len(pooled)
        row["concentration_base"] = Counter(pooled_base).most_common(1)[0][1] / len(pooled_base)
        row["top_label"] = Counter(pooled).most_common(1)[0][0]
        out["per_kind"][k] = row
    out["collapse"] = float(np.mean(collapse)) if collapse else None
    out["concentration"] = float(np.mean([r["concentration"] for r in out["per_kind"].values()]))
    out["ESR-1"] = float(np.mean([1 - m[c]["drawn"].get(c, 0.0) for c in concepts]))
    out["ESR-1-strict"] = float(np.mean([1 - sum(m[c]["drawn"].get(e, 0.0) for e in concepts) for c in concepts]))
    out["drawn"] = {c: m[c]["drawn"] for c in concepts}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", nargs="+", default=["neutral", "esd", "eap", "age"], choices=list(SETTINGS))
    ap.add_argument("--sizes", nargs="+", type=int, default=list(SETS), choices=list(SETS))
    ap.add_argument("--report-only", action="store_true", help="write the report from the runs kept; train nothing")
    ap.add_argument("--no-escape", action="store_true", help="skip the escape erasure (another process runs it)")
    ap.add_argument("--n", type=int, default=4, help="seeds per prompt")
    ap.add_argument("--quick", action="store_true", help="2 iterations per erasure: checks the script, measures nothing")
    ap.add_argument("--iterations", type=int, default=None, help="updates per erasure other than the shared settings' "
                    "(a weaker or stronger erasure, to compare methods at comparable ESR); kept apart per budget and "
                    "reported by the next run at the shared settings (e.g. --report-only)")  # fmt: skip
    ap.add_argument("--out", default=str(RESULTS / "collapse"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("UNSEE_THREADS", "2")))
    common = COMMON | (dict(iterations=2, ddim_steps=2) if args.quick else {})
    if args.iterations is not None and args.iterations < 1:
        raise SystemExit(f"--iterations must be at least 1 (got {args.iterations})")
    tag = "" if args.iterations in (None, common["iterations"]) else f"_it{args.iterations}"
    if tag:
        common = common | {"iterations": args.iterations}
    pipe, oracle = load_pipeline("mini"), load_oracle()
    fp = fingerprint(pipe)
    out = Path(args.out)
    parts = out.with_name(out.name + "_runs") / fp / ("quick" if args.quick else "full")
    parts.mkdir(parents=True, exist_ok=True)
    every = sorted({c for k in args.sizes for c in SETS[k]} | set(ESCAPE), key=lambda c: (kind(c), c))
    base = measure(pipe, oracle, every, args.n, seed=0)
    erasures = {f"{k}": SETS[k] for k in args.sizes} | ({} if args.no_escape else {"escape": ESCAPE})
    args.sizes = sorted(args.sizes)
    results: dict = {}
    for name, concepts in erasures.items():
        for method in args.methods:
            f = parts / f"{method}_{name}{tag}.json"
            folder = parts / "edits" / f"{method}_{name}{tag}"
            if args.report_only:
                if f.exists():
                    results.setdefault(method, {})[name] = json.loads(f.read_text())
                continue
            if not (folder / "edit.json").exists():
                cfg = make_config(SETTINGS[method][0], **settings(method, common, concepts))
                t0 = time.perf_counter()
                edit = erase(pipe, list(concepts), cfg, torch.Generator().manual_seed(0))
                edit.info["seconds"] = time.perf_counter() - t0
                edit.save(folder)
            edit = Edit.load(folder)
            if not f.exists() or json.loads(f.read_text()).get("edit_digest") != edit.digest:
                with edit.applied(pipe):
                    m = measure(pipe, oracle, concepts, args.n, seed=0)
                res = scores(m, base, concepts) | {"edit_digest": edit.digest, "seconds": edit.info["seconds"],
                                                   "iterations": common["iterations"]}  # fmt: skip
                f.write_text(json.dumps(res, indent=1))
                torch.save({c: m[c]["images"][:, 0] for c in concepts}, parts / f"{method}_{name}{tag}_images.pt")
                print(method, name, {k: v for k, v in res.items() if isinstance(v, float)}, flush=True)
            results.setdefault(method, {})[name] = json.loads(f.read_text())
    if tag:  # the report is the shared settings' table; this budget joins it in the next run at those settings
        print(f"kept under {parts} with the suffix {tag}; write the report with --report-only", flush=True)
        return
    base_scores = {name: scores(base, base, cs) for name, cs in erasures.items()}
    budgets: dict = {}  # method -> updates -> the 10-concept erasure's scores, every budget kept
    for m in args.methods:
        for f in [parts / f"{m}_10.json", *sorted(parts.glob(f"{m}_10_it*.json"))]:
            if f.exists():
                res = json.loads(f.read_text())
                budgets.setdefault(m, {})[res.get("iterations", COMMON["iterations"])] = res
    report = {"model_fingerprint": fp, "sets": erasures, "settings": {m: SETTINGS[m] for m in args.methods},
              "common": common, "n": args.n, "base": base_scores, "results": results, "quick": args.quick,
              "budgets_10": budgets}  # fmt: skip
    md = markdown(report, args)
    plot(report, out.with_suffix(".png"), args)
    grid(pipe, base, parts, erasures, args, out.with_name(out.name + "_grid.png"))
    write_report(out, report, md, default=str)


def markdown(r: dict, args) -> str:
    sizes = [str(k) for k in args.sizes]
    lines = ["# Collapse of erased concepts (mini model)", "",
             f"Model fingerprint `{r['model_fingerprint']}`; {args.n} seeds per prompt; the erasure benchmark's shared "
             f"settings `{json.dumps(r['common'])}`. Sets: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in r["sets"].items())
             + ". Collapse index: 1 - D_edit/D_base over pairs of erased concepts of one kind (RMS pixel distance, same "
             "prompt and seed); – where a set has no two concepts of one kind. Concentration: share of the erased "
             "prompts' images (pooled per kind) on their single most common oracle label.", "",
             "| method | " + " | ".join(f"collapse @{k}" for k in sizes) + " | "
             + " | ".join(f"concentration @{k}" for k in sizes) + " | "
             + " | ".join(f"ESR-1 / strict @{k}" for k in sizes) + " |",
             "|---" * (1 + 3 * len(sizes)) + "|"]  # fmt: skip
    rows = {"base": r["base"]} | r["results"]

    def cell(res: dict, k: str, key: str) -> str:
        v = res.get(k, {}).get(key)
        return "–" if v is None else f"{v:.2f}"

    for m, res in rows.items():
        esr = [f"{100 * res[k]['ESR-1']:.0f} / {100 * res[k]['ESR-1-strict']:.0f}" if k in res else "–" for k in sizes]
        lines.append(f"| {m} | " + " | ".join(cell(res, k, "collapse") for k in sizes) + " | "
                     + " | ".join(cell(res, k, "concentration") for k in sizes) + " | " + " | ".join(esr) + " |")  # fmt: skip
    lines += ["", f"## Where the erased prompts go: {', '.join(ESCAPE)} erased together", "",
              "Oracle top-1 of each erased prompt's images (share, %); bold: an erased concept (an escape, which ESR-1 "
              "counts as erased and ESR-1 strict as a failure).", ""]  # fmt: skip
    for m, res in rows.items():
        if "escape" not in res:
            continue
        e = res["escape"]
        lines += [f"**{m}** (ESR-1 {100 * e['ESR-1']:.0f}, strict {100 * e['ESR-1-strict']:.0f})", "",
                  "| prompt | " + " | ".join(OBJECTS) + " |", "|---" * (len(OBJECTS) + 1) + "|"]  # fmt: skip
        for c in ESCAPE:
            cells = []
            for o in OBJECTS:
                v = 100 * e["drawn"][c].get(o, 0.0)
                cells.append(("**{:.0f}**" if o in ESCAPE and v > 0 else "{:.0f}").format(v))
            lines.append(f"| a … {c} | " + " | ".join(cells) + " |")
        lines.append("")
    ten = r["results"]
    if 10 in args.sizes and all("10" in ten.get(m, {}) for m in ("neutral", "age")):
        a, b = ten["age"]["10"], ten["neutral"]["10"]
        lines += [f"At 10 concepts, age's collapse index is {a['collapse']:.2f} against neutral's {b['collapse']:.2f} "
                  f"(margin {b['collapse'] - a['collapse']:+.2f}), at ESR-1 {100 * a['ESR-1']:.0f} vs "
                  f"{100 * b['ESR-1']:.0f}.", ""]  # fmt: skip
    budgets = r.get("budgets_10", {})
    if any(len(b) > 1 for b in budgets.values()):
        lines += ["## At comparable erasure: 10 concepts, other numbers of updates", "",
                  "The same 10-concept erasure with fewer or more updates than the shared settings' (`python "
                  "benchmarks/collapse.py --sizes 10 --no-escape --methods M --iterations N`): a weaker erasure for the "
                  "method that erases more, so that two methods' collapse can be read at about the same ESR-1.", "",
                  "| method | updates | ESR-1 / strict | collapse @10 | concentration @10 |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for m, b in budgets.items():
            for it, v in sorted(b.items(), key=lambda x: int(x[0])):
                lines.append(f"| {m} | {it} | {100 * v['ESR-1']:.0f} / {100 * v['ESR-1-strict']:.0f} | "
                             f"{v['collapse']:.2f} | {v['concentration']:.2f} |")  # fmt: skip
        if "age" in budgets and "neutral" in budgets:
            for it, a in sorted(budgets["age"].items(), key=lambda x: int(x[0])):
                nit, n = min(budgets["neutral"].items(), key=lambda x: abs(x[1]["ESR-1"] - a["ESR-1"]))
                lines += ["", f"age at {it} updates (ESR-1 {100 * a['ESR-1']:.0f}) against neutral at the budget whose "
                          f"ESR-1 is nearest, {nit} updates (ESR-1 {100 * n['ESR-1']:.0f}): collapse {a['collapse']:.2f} "
                          f"against {n['collapse']:.2f} (margin {n['collapse'] - a['collapse']:+.2f})."]  # fmt: skip
                at = matched_collapse(budgets["neutral"], a["ESR-1"])
                if at is not None:
                    lines[-1] += (f" Neutral's collapse at age's ESR-1, read linearly between its two budgets either side: "
                                  f"{at:.2f} (margin {at - a['collapse']:+.2f}).")  # fmt: skip
        lines.append("")
    if r["quick"]:
        lines.append("**--quick run: 2 iterations per erasure; these numbers measure nothing.**")
    return "\n".join(lines) + "\n"


def matched_collapse(runs: dict, esr: float) -> float | None:
    """A method's collapse index at ESR-1 ``esr``, linear between its two runs (budgets) whose ESR-1 lie either side
    of it and are nearest; None where no two runs bracket it."""
    pts = sorted((v["ESR-1"], v["collapse"]) for v in runs.values())
    for (e0, c0), (e1, c1) in zip(pts, pts[1:]):
        if e0 <= esr <= e1 and e1 > e0:
            return c0 + (c1 - c0) * (esr - e0) / (e1 - e0)
    return None


def plot(r: dict, path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = {m: b for m, b in r.get("budgets_10", {}).items() if len(b) > 1}
    fig, axes = plt.subplots(1, 3 if budgets else 2, figsize=(15 if budgets else 10, 4))
    for m, res in r["results"].items():
        xs = [k for k in args.sizes if res.get(str(k), {}).get("collapse") is not None]
        axes[0].plot(xs, [res[str(k)]["collapse"] for k in xs], marker="o", label=m)
        xs = [k for k in args.sizes if str(k) in res]
        axes[1].plot(xs, [res[str(k)]["concentration"] for k in xs], marker="o", label=m)
    axes[1].plot(args.sizes, [r["base"][str(k)]["concentration"] for k in args.sizes], "k:", label="base")
    axes[0].set(xlabel="concepts erased at once", ylabel="collapse index (1 - D_edit / D_base)", xscale="log")
    axes[1].set(xlabel="concepts erased at once", ylabel="concentration on one oracle label", xscale="log")
    for ax in axes[:2]:
        ax.set_xticks(args.sizes, [str(k) for k in args.sizes])
        ax.legend()
    if budgets:  # 10 concepts at several numbers of updates: collapse against how much is erased
        ax = axes[2]
        for m, b in r["budgets_10"].items():
            pts = sorted((100 * v["ESR-1"], v["collapse"], it) for it, v in b.items())
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
            for x, y, it in pts:
                ax.annotate(f"{it}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set(xlabel="ESR-1 (%), 10 concepts", ylabel="collapse index @10", title="labels: updates per erasure")
        ax.legend()
    fig.suptitle(f"Collapse of erased concepts (mini {r['model_fingerprint']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def grid(pipe, base: dict, parts: Path, erasures: dict, args, path: Path) -> None:
    """What the erased prompts draw at the largest set: one image per erased concept (prompt 0, seed 0), per row."""
    name = str(max(args.sizes))
    concepts = erasures[name]
    rows, labels = [torch.stack([base[c]["images"][0, 0] for c in concepts])], ["base"]
    for m in args.methods:
        f = parts / f"{m}_{name}_images.pt"
        if f.exists():
            ims = torch.load(f)
            rows.append(torch.stack([ims[c][0] for c in concepts]))
            labels.append(m)
    if len(rows) < 1 + len(args.methods):  # the images of a run are not kept here: keep the grid drawn with them
        print(f"grid not redrawn: the images of {len(args.methods) + 1 - len(rows)} of the {name}-concept runs are not "
              f"under {parts}", flush=True)  # fmt: skip
        return
    title = f"{name} concepts erased at once: what each erased prompt draws (seed 0)"
    image_grid(torch.cat(rows), [prompts(c)[0] for _ in rows for c in concepts], cols=len(concepts), cell=96,
               row_labels=labels, title=title).save(path)  # fmt: skip


if __name__ == "__main__":
    main()
