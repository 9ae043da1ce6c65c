"""The mini model's EAP erasure as a LoRA: ESR-1 and PSR-1 at ranks 1, 4 and 16 against the exact edit.

The edit is the object protocol's EAP erasure of split 0 (5 of 10 objects), made with benchmarks/erasure.py's
settings and seed; its kept copy from that benchmark (or from benchmarks/robust.py) is reused when it was made with
those settings, else it is trained once and kept here. Each rank's LoRA is exported with
``unsee.export.lora.export_lora``, loaded into a fresh mini model by plain diffusers (``load_lora_weights``), fused,
and judged by the oracle on the erasure benchmark's prompts and seeds. EAP trains the cross-attention output biases,
which a LoRA cannot carry (they are dropped, ``allow_dropped=True``): the "weights only" row is the edit without them,
the limit of the LoRA as its rank grows. Every row is cached as it finishes, so an interrupted run continues.

Run: `UNSEE_THREADS=1 .venv/bin/python benchmarks/lora.py` (writes benchmarks/results/lora.{json,md}).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from _report import write_report
from erasure import COMMON, same_settings, settings
from unsee.edits import Edit
from unsee.export.lora import export_lora
from unsee.methods import erase, make_config
from unsee.models import fingerprint, load_pipeline, sampling_defaults
from unsee.world import OBJECTS
from unsee.world.oracle import load_oracle
from unsee.world.protocols import SPLITS, Sampling, class_rates, judge_objects, object_scores

RESULTS = Path(__file__).parent / "results"
RANKS = (1, 4, 16)
KEYS = ("ESR-1", "PSR-1", "ESR-1-strict", "ESR-3", "PSR-3")


def eap_edit(pipe, fp: str, split: int, parts: Path) -> tuple[Edit, str]:
    """The EAP edit of ``split`` with benchmarks/erasure.py's settings and seed: a kept one, or trained once here."""
    cfg = make_config("eap", **settings("eap", COMMON, SPLITS[split]))
    name = f"eap_split{split}"
    kept = [RESULTS / "erasure_runs" / fp / "edits" / name, RESULTS / "robust_runs" / fp / "edits" / name, parts / "edits" / name]
    for folder in kept:
        if (folder / "edit.json").exists():
            edit = Edit.load(folder)
            if edit.seed == split and edit.base_fingerprint == fp and same_settings(edit.config, cfg):
                return edit, str(folder.relative_to(RESULTS.parent.parent))
    print(f"no kept EAP edit of split {split}: training it ({cfg.iterations} iterations)", flush=True)
    edit = erase(pipe, list(SPLITS[split]), cfg, torch.Generator().manual_seed(split))
    edit.save(kept[-1])
    return edit, str(kept[-1].relative_to(RESULTS.parent.parent))


def judged(f: Path, pipe, oracle, s: Sampling, erased, extra: dict | None = None) -> dict:
    """``pipe``'s object-protocol scores (cached in ``f``)."""
    if not f.exists():
        t0 = time.perf_counter()
        rates = class_rates(judge_objects(pipe, oracle, OBJECTS, s))
        res = object_scores(rates, erased) | {"per_class": rates, "judge_seconds": time.perf_counter() - t0} | (extra or {})
        f.write_text(json.dumps(res, indent=1))
        print(f.stem, {k: round(res[k], 4) for k in KEYS}, flush=True)
    return json.loads(f.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", nargs="+", type=int, default=list(RANKS))
    ap.add_argument("--split", type=int, default=0)
    ap.add_argument("--n", type=int, default=4, help="images per prompt (8 prompts per class), as benchmarks/erasure.py")
    ap.add_argument("--out", default=str(RESULTS / "lora"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("UNSEE_THREADS", "2")))  # 1 when sharing the machine
    pipe, oracle = load_pipeline("mini"), load_oracle()
    fp = fingerprint(pipe)
    parts = RESULTS / "lora_runs" / fp
    parts.mkdir(parents=True, exist_ok=True)
    erased = SPLITS[args.split]
    d = sampling_defaults("mini")
    s = Sampling(n=args.n, seed=0, steps=d.steps, guidance_scale=d.guidance_scale)  # benchmarks/erasure.py's seeds
    edit, source = eap_edit(pipe, fp, args.split, parts)
    tag = f"split{args.split}_n{args.n}_{edit.digest}"

    rows: dict[str, dict] = {}
    base = RESULTS / "erasure_runs" / fp / "base.json"  # the erasure benchmark's base model, same seeds (when n matches)
    if base.exists() and args.n == 4:
        rows["base model"] = object_scores(json.loads(base.read_text()), erased)
    with edit.applied(pipe):
        rows["exact edit"] = judged(parts / f"exact_{tag}.json", pipe, oracle, s, erased)
    biases = {k: v for k, v in edit.tensors.items() if not k.endswith(".weight")}
    weights_only = Edit(edit.method, edit.config, edit.concepts, edit.base_fingerprint, edit.seed,
                        {k: v for k, v in edit.tensors.items() if k not in biases})  # fmt: skip
    with weights_only.applied(pipe):
        rows["weights only (biases dropped)"] = judged(parts / f"weights_only_{tag}.json", pipe, oracle, s, erased)
    for r in args.ranks:
        f = parts / f"rank{r}_{tag}.json"
        if not f.exists():
            t0 = time.perf_counter()
            lora = export_lora(edit, pipe, rank=r, allow_dropped=True)
            folder = lora.save(parts / "edits" / f"lora_rank{r}_{tag}", info={"edit": source, "model": "mini"})
            seconds = time.perf_counter() - t0
            fresh = load_pipeline("mini")
            fresh.load_lora_weights(folder)  # plain diffusers
            fresh.fuse_lora()
            fresh.unload_lora_weights()
            report = lora.report()
            extra = {"export_seconds": seconds, "max_error": report["max_error"], "mean_error": report["mean_error"],
                     "errors": report["errors"], "dropped": report["dropped"],
                     "lora_bytes": (folder / "pytorch_lora_weights.safetensors").stat().st_size}  # fmt: skip
            judged(f, fresh, oracle, s, erased, extra)
            del fresh
        rows[f"LoRA rank {r}"] = json.loads(f.read_text())

    exact = rows["exact edit"]
    recorded = RESULTS / "erasure_runs" / fp / f"eap_split{args.split}.json"
    check = ""
    if recorded.exists() and args.n == 4:
        rec = json.loads(recorded.read_text())
        if rec.get("edit_digest") == edit.digest:
            same = all(abs(rec[k] - exact[k]) < 1e-9 for k in ("ESR-1", "PSR-1"))
            check = (f"The exact edit's ESR-1 / PSR-1 {'equal' if same else 'DIFFER from'} those benchmarks/erasure.py "
                     f"recorded for it ({100 * rec['ESR-1']:.2f} / {100 * rec['PSR-1']:.2f}).")  # fmt: skip
    table = ["| row | ESR-1 | PSR-1 | ΔESR-1 | ΔPSR-1 | ESR-1 strict | ESR-3 | PSR-3 | rel. error mean / max | LoRA size |",
             "|---" * 10 + "|"]  # fmt: skip
    summary = {}
    for name, row in rows.items():
        delta = {k: row[k] - exact[k] for k in ("ESR-1", "PSR-1")}
        summary[name] = {k: row.get(k) for k in KEYS} | {f"delta_{k}": v for k, v in delta.items()}
        err, size = "–", "–"
        if "max_error" in row:
            summary[name] |= {k: row[k] for k in ("max_error", "mean_error", "lora_bytes", "export_seconds")}
            err, size = f"{row['mean_error']:.3f} / {row['max_error']:.3f}", f"{row['lora_bytes'] / 2**10:.0f} KiB"
        cells = [f"{100 * row[k]:.1f}" if k in row else "–" for k in KEYS]
        table.append(f"| {name} | {cells[0]} | {cells[1]} | {100 * delta['ESR-1']:+.1f} | {100 * delta['PSR-1']:+.1f} | "
                     f"{' | '.join(cells[2:])} | {err} | {size} |")  # fmt: skip
    verdict = []
    if 16 in args.ranks:
        r16 = summary["LoRA rank 16"]
        ok = abs(r16["delta_ESR-1"]) <= 0.03 and abs(r16["delta_PSR-1"]) <= 0.03
        verdict.append(f"Rank 16 {'keeps' if ok else 'does NOT keep'} ESR-1 and PSR-1 within 3 points of the exact edit "
                       f"(ΔESR-1 {100 * r16['delta_ESR-1']:+.1f}, ΔPSR-1 {100 * r16['delta_PSR-1']:+.1f}).")  # fmt: skip
        summary["rank16_within_3_points"] = ok
    layers = len(edit.tensors) - len(biases)
    md = "\n".join([
        "# LoRA export of an EAP erasure on the mini model",
        "",
        f"Model: `mini`, fingerprint `{fp}`. Edit: EAP, object protocol split {args.split} (erases {', '.join(erased)}), "
        f"benchmarks/erasure.py's settings and seed, digest `{edit.digest}` (`{source}`). It changes {layers} "
        f"cross-attention weights and {len(biases)} output-projection biases; a LoRA carries the weights (truncated SVD "
        "of each delta, every layer at the row's rank, alpha = rank) and drops the biases. Each LoRA is loaded into a "
        "fresh mini model with plain `pipe.load_lora_weights(dir)` and fused. Oracle top-k on the erasure benchmark's "
        f"prompts and seeds: {args.n} images x 8 prompts per class, seed 0 + 100 x class. Δ: against the exact edit, "
        "in points. Relative error: ‖ΔW − BA‖_F / ‖ΔW‖_F per layer (the Eckart–Young value).",
        "",
        *table,
        "",
        *verdict,
        *([check] if check else []),
        "",
    ])  # fmt: skip
    report = {"model": "mini", "model_fingerprint": fp, "edit": source, "edit_digest": edit.digest, "split": args.split,
              "erased": list(erased), "sampling": vars(s), "ranks": args.ranks, "dropped": sorted(biases),
              "rows": summary, "per_row": rows, "markdown": md}  # fmt: skip
    write_report(args.out, report, md)


if __name__ == "__main__":
    main()
