"""Cost of eap and the robust rows on split 1 (5 objects erased at once), in one process, interleaved.

The robust rows' wall time against EAP's (issue 25: at most 3x), measured side by side so that the machine's load
is the same for all of them: each row for 1 and for 7 updates, twice, the faster kept, so that the setup
(EAP's nearest tokens) and the per-update cost are told apart and an erasure of the benchmark's length is priced.
EAP runs in every measurement; ``--rows`` measures some rows again and keeps the others' earlier figures (each
row's ratio is to the EAP of its own run).
Writes benchmarks/results/robust_cost.{json,md}.
Usage: python benchmarks/robust_cost.py [--rows ROW ...]  (UNSEE_THREADS sets the torch threads, default 1)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from _report import write_report
from erasure import COMMON
from robust import D_CE_SEED, N_IMAGES, RESULTS, ROWS
from unsee.methods import erase, make_config
from unsee.models import fingerprint, load_pipeline
from unsee.world.concepts import concept_images
from unsee.world.protocols import SPLITS

UPDATES = 6
MEASURED = ("robust", "robust-pc", "robust-po", "robust-ppc", "robust-ppc-both", "robust-ppc-company",
            "robust-ppc-company-s6", "robust-ppc-words-s6")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", nargs="+", default=list(MEASURED), choices=list(MEASURED),
                    help="robust rows to measure (against EAP, measured with them); the others keep their figures")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("UNSEE_THREADS", "1")))
    pipe = load_pipeline("mini")
    fp = fingerprint(pipe)
    concepts = list(SPLITS[1])
    images = [concept_images(c, N_IMAGES, seed=D_CE_SEED) for c in concepts]
    out = RESULTS / "robust_cost.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    keep = old.get("model_fingerprint") == fp and old.get("updates") == UPDATES and "setup" in old
    timed: dict[str, list[tuple[float, float]]] = {}  # per row, per repeat: (1 update, 1 + UPDATES updates) seconds
    for _ in range(2):
        for row in ("eap", *args.rows):
            method, kw = ROWS[row]
            t = []
            for n in (1, 1 + UPDATES):
                cfg = make_config(method, **(COMMON | kw | {"iterations": n}))
                t0 = time.perf_counter()
                erase(pipe, concepts, cfg, torch.Generator().manual_seed(0),
                      **({"images": images} if method == "robust" else {}))  # fmt: skip
                t.append(time.perf_counter() - t0)
            timed.setdefault(row, []).append((t[0], t[1]))
    # Per update: the difference of the two runs over UPDATES (the setup, e.g. EAP's nearest tokens, cancels); the
    # setup: what the 1-update run took beyond one update. An erasure of the benchmark's length: setup + N updates.
    best = {r: min((b - a) / UPDATES for a, b in v) for r, v in timed.items()}
    setup = {r: max(0.0, min(a for a, _ in v) - best[r]) for r, v in timed.items()}
    iterations = COMMON["iterations"]
    erasure = {r: setup[r] + iterations * best[r] for r in best}
    ratio = {r: erasure[r] / erasure["eap"] for r in best}
    if keep:  # rows not measured now keep their figures, and their ratio to their own run's EAP
        for r in [r for r in MEASURED if r not in best and r in old["best"]]:
            timed[r], best[r], setup[r] = old["seconds"][r], old["best"][r], old["setup"][r]
            erasure[r], ratio[r] = old["erasure_seconds"][r], old["x_eap"][r]
    rows = [r for r in ("eap", *MEASURED) if r in best]
    md = ["# Cost of the robust erasure against EAP", "",
          f"Model `mini`, fingerprint `{fp}`. Split 1 ({', '.join(concepts)}) erased at once, each row run for 1 and "
          f"for {1 + UPDATES} updates, twice in turn in one process ({torch.get_num_threads()} thread), the faster "
          f"kept: s / update is the difference over {UPDATES} updates, setup what the 1-update run took beyond it, "
          f"and an erasure of the benchmark's {iterations} updates is setup + {iterations} updates. x eap: against "
          f"the EAP of the row's own run.", "",
          f"| row | s / update | setup s | s / erasure ({iterations} updates) | x eap |", "|---|---|---|---|---|"]  # fmt: skip
    md += [f"| {r} | {best[r]:.2f} | {setup[r]:.1f} | {erasure[r]:.0f} | {ratio[r]:.2f} |" for r in rows]
    write_report(RESULTS / "robust_cost", {"model_fingerprint": fp, "split": 1, "updates": UPDATES,
                                            "threads": torch.get_num_threads(), "seconds": timed,
                                            "best": {r: best[r] for r in rows}, "setup": {r: setup[r] for r in rows},
                                            "erasure_seconds": {r: erasure[r] for r in rows},
                                            "x_eap": {r: ratio[r] for r in rows}}, "\n".join(md) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
