"""Cost per update of eap and the robust rows (robust, robust-pc, robust-po, robust-ppc, robust-ppc-both,
robust-ppc-company) on split 1 (5 objects erased at once), in one process, interleaved.

The robust rows' wall time against EAP's (issue 25: at most 3x), measured side by side so that the machine's load
is the same for all of them: 6 updates each, twice, the faster kept. Writes benchmarks/results/robust_cost.{json,md}.
Usage: python benchmarks/robust_cost.py  (UNSEE_THREADS sets the torch threads, default 1)
"""

from __future__ import annotations

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


def main() -> None:
    torch.set_num_threads(int(os.environ.get("UNSEE_THREADS", "1")))
    pipe = load_pipeline("mini")
    concepts = list(SPLITS[1])
    images = [concept_images(c, N_IMAGES, seed=D_CE_SEED) for c in concepts]
    per_update: dict[str, list[float]] = {}
    for _ in range(2):
        for row in ("eap", "robust", "robust-pc", "robust-po", "robust-ppc", "robust-ppc-both", "robust-ppc-company"):
            method, kw = ROWS[row]
            cfg = make_config(method, **(COMMON | kw | {"iterations": UPDATES}))
            t0 = time.perf_counter()
            erase(pipe, concepts, cfg, torch.Generator().manual_seed(0), **({"images": images} if method == "robust" else {}))
            per_update.setdefault(row, []).append((time.perf_counter() - t0) / UPDATES)
    best = {r: min(v) for r, v in per_update.items()}
    ratio = {r: best[r] / best["eap"] for r in best}
    md = ["# Cost per update of the robust erasure against EAP", "",
          f"Model `mini`, fingerprint `{fingerprint(pipe)}`. Split 1 ({', '.join(concepts)}) erased at once, {UPDATES} "
          f"updates per run (the setup, e.g. EAP's nearest tokens, included and shared out), each row twice in turn in "
          f"one process ({torch.get_num_threads()} thread), the faster kept.", "",
          "| row | s / update | x eap |", "|---|---|---|"]  # fmt: skip
    md += [f"| {r} | {best[r]:.2f} | {ratio[r]:.2f} |" for r in best]
    write_report(RESULTS / "robust_cost", {"model_fingerprint": fingerprint(pipe), "split": 1, "updates": UPDATES,
                                            "threads": torch.get_num_threads(), "seconds_per_update": per_update,
                                            "best": best, "x_eap": ratio}, "\n".join(md) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
