"""Which words the token search finds against each erasure of the object protocol (issue 25's "find out why" for the
token search, which no robust variant halves).

For every token-search attack kept by benchmarks/robust.py on the object protocol's splits (5 objects erased at
once): the 5 words the search prepends, how many name (or are a synonym of) another object erased in the same split,
and the attack's ASR. Chance: a word drawn uniformly from the attacker's vocabulary (the tokenizer's whole words)
names one of the 4 other erased objects with probability (their names and synonyms in it) / |vocabulary|. Reported
per row: that share, and the ASR of the objects whose words name another erased object against the rest.

Run: `.venv/bin/python benchmarks/robust_tokens.py` (seconds; reads benchmarks/results/robust_runs/<fingerprint>/),
writes benchmarks/results/robust_tokens.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from _report import write_report
from unsee.concepts.vocab import model_words
from unsee.models import fingerprint, load_pipeline
from unsee.world.captions import JUDGE_LABELS
from unsee.world.protocols import SPLITS

RESULTS = Path(__file__).parent / "results"


def mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default=str(RESULTS / "robust_runs"))
    ap.add_argument("--out", default=str(RESULTS / "robust_tokens"))
    args = ap.parse_args()
    pipe = load_pipeline("mini")
    fp = fingerprint(pipe)
    vocab = model_words(pipe)
    root = Path(args.runs) / fp / "attacks"
    rows = sorted({f.name for f in root.glob("split*/*")})
    attacks, summary = {}, {}
    for row in rows:
        found = []
        for s, split in enumerate(SPLITS):
            for obj in split:
                f = root / f"split{s}" / row / obj / "token-search" / "attack.json"
                if not f.exists():
                    continue
                a = json.loads(f.read_text())
                words = a["info"]["words"].split()
                names = [JUDGE_LABELS.get(w, w) for w in words]  # a synonym names its object ("disk": circle)
                others = [n for n in names if n in split and n != obj]
                found.append({"split": s, "object": obj, "words": words, "names_erased": len(others),
                              "names_itself": names.count(obj), "asr": a["summary"]["asr"]})  # fmt: skip
        if len(found) < sum(len(s) for s in SPLITS):
            continue  # a row attacked on part of the splits says nothing of the protocol
        attacks[row] = found
        n_words = sum(len(x["words"]) for x in found)
        with_ = [x["asr"] for x in found if x["names_erased"]]
        without = [x["asr"] for x in found if not x["names_erased"]]
        summary[row] = {"objects": len(found), "share_naming_erased": sum(x["names_erased"] for x in found) / n_words,
                        "share_naming_itself": sum(x["names_itself"] for x in found) / n_words,
                        "objects_naming_erased": len(with_), "asr_naming_erased": mean(with_),
                        "asr_rest": mean(without), "asr": mean([x["asr"] for x in found])}  # fmt: skip
    # per split, the vocabulary's words that name one of the other 4 objects, averaged over the objects
    chance = mean([sum(JUDGE_LABELS.get(w, w) in split and JUDGE_LABELS.get(w, w) != o for w in vocab) / len(vocab)
                   for split in SPLITS for o in split])  # fmt: skip
    report = {"model_fingerprint": fp, "vocabulary": len(vocab), "chance_naming_erased": chance, "rows": summary,
              "attacks": attacks}  # fmt: skip
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = ["# The token search's words against each erasure (object protocol, 5 objects erased per split)", "",
             f"Model `mini`, fingerprint `{fp}`. The search prepends 5 words from the tokenizer's {len(vocab)} whole "
             f"words (160 steps, `benchmarks/robust.py`); a word names an object when it is its name or a synonym (disk: "
             f"circle, plus: cross), and one drawn at random names one of the 4 other objects erased with it "
             f"{pct(chance)}% of the time. ASR: the oracle's top-1 over 4 colour prompts x 8 seeds.", "",
             "| row | objects | words naming another erased object | naming the object itself | objects whose words "
             "name another erased object | their ASR | the other objects' ASR | ASR |", "|---" * 8 + "|"]  # fmt: skip
    for row, v in summary.items():
        lines.append(f"| {row} | {v['objects']} | {pct(v['share_naming_erased'])}% | {pct(v['share_naming_itself'])}% | "
                     f"{v['objects_naming_erased']} | {pct(v['asr_naming_erased'])} | {pct(v['asr_rest'])} | "
                     f"{pct(v['asr'])} |")  # fmt: skip
    lines += ["", "The words found, per object (ASR in brackets):", "", "| split | object | " +
              " | ".join(summary) + " |", "|---" * (2 + len(summary)) + "|"]  # fmt: skip
    for i, x in enumerate(attacks[next(iter(attacks))]):
        cells = [f"{' '.join(attacks[r][i]['words'])} ({pct(attacks[r][i]['asr'])})" for r in summary]
        lines.append(f"| {x['split']} | {x['object']} | " + " | ".join(cells) + " |")
    write_report(args.out, report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
