"""Where the inversion attack's embedding lands, against the robust method's own attacker (issue 25's "find out why").

For every inversion attack kept by benchmarks/robust.py (the object protocol's splits and circle's budgets),
on the edit it attacked: the learned token's embedding p, the erased concept's word embedding w, and, for the
robust rows, the embedding p* the method's inner attacker ended training at (the edit records it). Reported per
attack: the ASR, cos(p, w), cos(p, p*), ‖p − p*‖ / ‖p*‖, and p's nearest vocabulary words; then, per row,
those numbers for the attacks that succeed (ASR above the row's median) against those that fail.

Run: `.venv/bin/python benchmarks/robust_where.py` (seconds; reads benchmarks/results/robust_runs/<fingerprint>/),
writes benchmarks/results/robust_where.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from _report import write_report
from unsee.attacks import AttackResult
from unsee.edits import Edit
from unsee.models import fingerprint, load_pipeline
from unsee.world.protocols import SPLITS

RESULTS = Path(__file__).parent / "results"


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default=str(RESULTS / "robust_runs"))
    ap.add_argument("--out", default=str(RESULTS / "robust_where"))
    args = ap.parse_args()
    pipe = load_pipeline("mini")
    fp = fingerprint(pipe)
    parts = Path(args.runs) / fp
    table = pipe.text_encoder.get_input_embeddings().weight.detach().float()
    tok = pipe.tokenizer

    def word(w: str) -> torch.Tensor:
        return table[tok(w, add_special_tokens=False).input_ids].mean(0)

    def nearest(v: torch.Tensor, k: int = 3) -> list[str]:
        return tok.convert_ids_to_tokens(torch.cdist(v[None], table)[0].topk(k, largest=False).indices.tolist())

    rows: list[dict] = []
    for folder in sorted(parts.glob("attacks/**/attack.json")):
        d = folder.parent
        rel = d.relative_to(parts / "attacks").parts  # (split<i>, row, concept, attack) or (circle, row, name)
        if not rel[-1].startswith("inversion") or "_v4_" in rel[-1]:
            continue
        if not (d / "learned" / "learned_embeds.safetensors").exists():
            continue  # its embedding did not come back from the machine that ran it
        r = AttackResult.load(d)
        erasure, row = rel[0], rel[1]
        edit_dir = parts / "edits" / f"{row}_{erasure}"
        if not (edit_dir / "edit.json").exists():
            continue
        edit = Edit.load(edit_dir)
        if edit.digest != r.edit["digest"]:
            continue  # the edit was trained again since: its recorded attacker is not the one this attack met
        p = r.learned.embeddings.float().mean(0)
        w = word(r.concept)
        out = {"erasure": erasure, "row": row, "concept": r.concept, "attack": rel[-1], "asr": r.asr,
               "cos_word": cos(p, w), "norm_ratio_word": float(p.norm() / w.norm()), "nearest": nearest(p)}  # fmt: skip
        if "adversary_embedding" in edit.info:
            concepts = list(SPLITS[int(erasure[5:])]) if erasure.startswith("split") else ["circle"]
            p_star = torch.tensor(edit.info["adversary_embedding"])[concepts.index(r.concept)].mean(0)
            out |= {"cos_adversary": cos(p, p_star), "dist_adversary": float((p - p_star).norm() / p_star.norm()),
                    "adversary_cos_word": cos(p_star, w), "adversary_nearest": nearest(p_star)}  # fmt: skip
        rows.append(out)

    summary: dict[str, dict] = {}
    for row in sorted({x["row"] for x in rows}):
        mine = [x for x in rows if x["row"] == row and x["erasure"].startswith("split")]
        if len(mine) < 2:
            continue
        med = statistics.median(x["asr"] for x in mine)
        groups = {"succeed (ASR > median)": [x for x in mine if x["asr"] > med],
                  "fail (ASR <= median)": [x for x in mine if x["asr"] <= med]}  # fmt: skip
        summary[row] = {"median_asr": med}
        for g, xs in groups.items():
            keys = (
                [k for k in ("asr", "cos_word", "norm_ratio_word", "cos_adversary", "dist_adversary") if k in xs[0]] if xs else []
            )
            summary[row][g] = {"n": len(xs)} | {k: statistics.mean(x[k] for x in xs) for k in keys}
        if "cos_adversary" in mine[0] and len(mine) >= 3:
            a = torch.tensor([x["asr"] for x in mine])
            for k in ("cos_adversary", "cos_word"):
                b = torch.tensor([x[k] for x in mine])
                summary[row][f"corr(asr, {k})"] = float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    report = {"model_fingerprint": fp, "attacks": rows, "summary": summary}
    lines = ["# Where the inversion attack's embedding lands", "",
             f"Model `mini`, fingerprint `{fp}`. For each inversion attack kept by benchmarks/robust.py, on the edit it "
             "attacked: p, the attack's learned embedding; w, the erased word's own embedding; p*, the embedding the "
             "robust method's inner attacker ended its training at (recorded in the edit). Cosines in the text "
             "encoder's input space.", "",
             "## Per row (object protocol): attacks that succeed against attacks that fail", "",
             "| row | group | n | mean ASR | cos(p, w) | ‖p‖ / ‖w‖ | cos(p, p*) | ‖p − p*‖ / ‖p*‖ |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    f = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    for row, s in summary.items():
        for g in ("succeed (ASR > median)", "fail (ASR <= median)"):
            x = s[g]
            if x["n"]:
                cells = [x.get(k) for k in ("cos_word", "norm_ratio_word", "cos_adversary", "dist_adversary")]
                lines.append(f"| {row} | {g} | {x['n']} | {100 * x['asr']:.0f}% | " + " | ".join(map(f, cells)) + " |")
    corr = {r: {k: v for k, v in s.items() if k.startswith("corr")} for r, s in summary.items()}
    corr = {r: c for r, c in corr.items() if c}
    if corr:
        lines += ["", "Correlation over the row's attacked objects: " + "; ".join(
            f"{r}: " + ", ".join(f"{k} {v:+.2f}" for k, v in c.items()) for r, c in corr.items()) + "."]  # fmt: skip
    lines += ["", "## Every attack", "", "| erasure | row | concept | attack | ASR | cos(p, w) | cos(p, p*) | "
              "‖p − p*‖ / ‖p*‖ | p's nearest words | p*'s nearest words |", "|---" * 10 + "|"]  # fmt: skip
    for x in rows:
        lines.append(f"| {x['erasure']} | {x['row']} | {x['concept']} | {x['attack']} | {100 * x['asr']:.0f}% | "
                     f"{f(x['cos_word'])} | {f(x.get('cos_adversary'))} | {f(x.get('dist_adversary'))} | "
                     f"{' '.join(x['nearest'])} | {' '.join(x.get('adversary_nearest', [])) or '–'} |")  # fmt: skip
    write_report(args.out, report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
