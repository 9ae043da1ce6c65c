"""Composing separately made erasures on the mini model (issue 26, composition).

Ten single-concept EAP erasures (objects, colours and a style), each trained once at the erasure
benchmark's settings and kept, are composed 2, 5 and 10 at a time (:meth:`unsee.edits.Edit.compose`:
their deltas summed). For each composition:

- the interference report of ``unsee compose-report`` (:func:`unsee.impact.interference.interference_report`):
  each concept's ESR alone and composed, PSR composed vs each edit alone, and the spectrum of the
  composition against the sum of the single spectra; timed, for the "10 edits in under 2 minutes" target;
- for the two-object composition, the object protocol of ``benchmarks/erasure.py`` (ESR-1/PSR-1 over all
  10 objects, 8 prompts x 4 seeds each) on each edit alone, the composition, and the erasure of both
  together (one EAP run on both concepts, the same settings): the issue's "Done when".

Edits, scores and reports are kept under ``benchmarks/results/compose_runs/<fingerprint>/``, so an
interrupted run continues where it stopped; a composition whose edits are not all trained yet is reported
as pending (``--train-only`` only trains them, in the order the compositions need them).

Run: ``.venv/bin/python benchmarks/compose.py`` (writes benchmarks/results/compose.{json,md} and compose_*.png).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import shutil
import time
import warnings
from pathlib import Path

import torch

from _report import write_report
from erasure import COMMON, same_settings, settings
from unsee.concepts.prompts import DEFAULT_NEUTRAL
from unsee.edits import Edit, SharedTensorsWarning
from unsee.impact.interference import interference_report, plot_spectra
from unsee.impact.spectrum import concept_vocabulary, make_draws
from unsee.methods import Run, erase, make_config
from unsee.models import fingerprint, load_pipeline, sampling_defaults
from unsee.world import OBJECTS
from unsee.world.captions import JUDGE_LABELS
from unsee.world.oracle import load_oracle
from unsee.world.prompts import composition_prompts
from unsee.world.protocols import Sampling, class_rates, judge_objects, object_scores

RESULTS = Path(__file__).parent / "results"
# The interference report's settings: those of `unsee compose-report` by default.
REPORT = dict(n=2, prompts=4, preserved=8, draws=4, seed=0)
# The order the compositions take them in: 2 objects, then + an object, a colour and a style, then 10.
SINGLES = ("circle", "square", "star", "red", "checkered", "triangle", "hexagon", "arrow", "blue", "green")
SIZES = (2, 5, 10)
STYLES = ("plain", "striped", "dotted", "checkered")
SEED = 0


def edit_config(concepts: tuple[str, ...]):
    """EAP at the erasure benchmark's settings (its "eap" row); a style is named "a {} pattern" as in its style row."""
    kw = settings("eap", COMMON, list(concepts))
    if any(c in STYLES for c in concepts):
        kw["template"] = "a {} pattern"
    return make_config("eap", **kw)


def name_of(concepts: tuple[str, ...]) -> str:
    return "eap_" + "+".join(concepts)


def kept_elsewhere(fp: str, concepts: tuple[str, ...], cfg) -> Path | None:
    """An edit another benchmark kept of these concepts with these settings and seed (e.g. robust.py's eap_circle)."""
    for runs in ("robust_runs", "attacks_runs", "erasure_runs"):
        folder = RESULTS / runs / fp / "edits" / name_of(concepts)
        if (folder / "edit.json").exists():
            edit = Edit.load(folder)
            if edit.seed == SEED and edit.concepts == concepts and same_settings(edit.config, cfg):
                return folder
    return None


def get_edit(pipe, parts: Path, fp: str, concepts: tuple[str, ...], train: bool = True, wait: bool = True) -> Edit | None:
    """The EAP erasure of ``concepts`` (seed 0), trained once and kept in ``parts/edits`` (checkpointed, so an
    interrupted training resumes); None when it is not trained yet and ``train`` is off, or when another process is
    training it and ``wait`` is off (a lock file: several processes can share the training)."""
    folder = parts / "edits" / name_of(concepts)
    cfg = edit_config(concepts)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".train.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return None
        if (folder / "edit.json").exists():
            edit = Edit.load(folder)
            if same_settings(edit.config, cfg) and edit.seed == SEED:
                return edit
        other = kept_elsewhere(fp, concepts, cfg)
        if other is not None:
            shutil.copytree(other, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".lock"))
            return Edit.load(folder)
        if not train:
            return None
        print(f"training {name_of(concepts)}", flush=True)
        t0 = time.perf_counter()
        run = Run(folder / "run", checkpoint_every=25, resume=(folder / "run" / "checkpoint.pt").exists(), progress=False)
        edit = erase(pipe, list(concepts), cfg, torch.Generator().manual_seed(SEED), run=run)
        edit.save(folder)
        (folder / "seconds.json").write_text(json.dumps({"seconds": time.perf_counter() - t0, "device": "cpu",
                                                         "threads": torch.get_num_threads()}))  # fmt: skip
        shutil.rmtree(folder / "run", ignore_errors=True)
        return edit


def train_all(pipe, parts: Path, fp: str, order: tuple[str, ...] = SINGLES) -> None:
    """Every edit the report needs, in the order the compositions need them (the joint erasure right after its parts);
    an edit another process is training is left to it, and waited for at the end."""
    needed = []
    for c in order:
        needed += [(c,), SINGLES[:2]] if c == SINGLES[1] else [(c,)]
    for concepts in needed:
        get_edit(pipe, parts, fp, concepts, wait=False)
    for concepts in needed:
        get_edit(pipe, parts, fp, concepts)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def composition(pipe, oracle, edits: list[Edit], parts: Path, k: int) -> dict:
    """The interference report of ``edits`` composed (as ``unsee compose-report`` writes it), kept per composition;
    its wall and CPU time are those of the report alone (the model loaded, the vocabulary's embeddings cached)."""
    f = parts / f"report_{k}.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedTensorsWarning)  # recorded in the report: info["shared"]
        digest = Edit.compose(edits, pipe).digest
    if f.exists():
        kept = json.loads(f.read_text())
        if kept["composed"]["digest"] == digest and kept["bench_settings"] == REPORT:
            return kept
    erased = [JUDGE_LABELS.get(c, c) for e in edits for c in e.concepts]
    prompts = composition_prompts(erased, n_prompts=REPORT["prompts"], n_preserved=REPORT["preserved"])
    cache = parts / "cache"
    vocab = concept_vocabulary(pipe, neutral=DEFAULT_NEUTRAL, cache_dir=cache)  # once per model: cached on disk
    t0, c0 = time.perf_counter(), cpu_seconds()
    draws = make_draws(pipe, REPORT["draws"], seed=REPORT["seed"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedTensorsWarning)
        r = interference_report(pipe, edits, oracle, prompts, labels=JUDGE_LABELS, vocab=vocab, draws=draws, n=REPORT["n"],
                                seed=REPORT["seed"], cache_dir=cache, keep_images=True, base_esr=True)  # fmt: skip
    grid = r.grid(RESULTS / f"compose_{k}_grid.png")
    plot_spectra(r, RESULTS / f"compose_{k}_spectrum.png")
    res = r.to_dict() | {"wall_seconds": time.perf_counter() - t0, "cpu_seconds": cpu_seconds() - c0,
                         "threads": torch.get_num_threads(), "grid": grid.name, "bench_settings": REPORT}  # fmt: skip
    f.write_text(json.dumps(res, indent=1))
    print(f"composition of {k}: report in {res['wall_seconds']:.0f} s wall, {res['cpu_seconds']:.0f} s CPU", flush=True)
    return res


def objects_protocol(pipe, oracle, edit: Edit | None, name: str, parts: Path, fp: str) -> dict:
    """benchmarks/erasure.py's object protocol (all 10 objects, 8 prompts x 4 seeds, the oracle's top-k) under
    ``edit``: the per-class rates, kept per edit digest; the base model's come from the erasure benchmark's run."""
    d = sampling_defaults("mini")
    s = Sampling(n=4, seed=0, steps=d.steps, guidance_scale=d.guidance_scale)
    if edit is None:
        kept = RESULTS / "erasure_runs" / fp / "base.json"
        if kept.exists():
            return json.loads(kept.read_text())
    f = parts / f"objects_{name}.json"
    digest = edit.digest if edit is not None else "base"
    if f.exists() and json.loads(f.read_text())["digest"] == digest:
        return json.loads(f.read_text())["rates"]
    if edit is None:
        rates = class_rates(judge_objects(pipe, oracle, OBJECTS, s))
    else:
        with edit.applied(pipe):
            rates = class_rates(judge_objects(pipe, oracle, OBJECTS, s))
    f.write_text(json.dumps({"digest": digest, "rates": rates}, indent=1))
    print(f"objects protocol: {name} done", flush=True)
    return rates


def done_when(pipe, oracle, edits: list[Edit], joint: Edit | None, parts: Path, fp: str) -> dict:
    """The issue's target: two single-object erasures composed keep each ESR-1 >= 90% and lose at most 5 points of
    PSR-1 more than the erasure of both together (the object protocol; PSR over the 8 objects neither erases).
    Without the joint erasure yet (``None``), the rest is measured and the PSR target left open."""
    erased = [c for e in edits for c in e.concepts]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedTensorsWarning)
        composed = Edit.compose(edits, pipe)
    models = {"base": None, **{f"alone_{e.concepts[0]}": e for e in edits}, "composed": composed}
    if joint is not None:
        models["joint"] = joint
    rates = {m: objects_protocol(pipe, oracle, e, m, parts, fp) for m, e in models.items()}
    scores = {m: object_scores(r, erased) | {f"ESR-1 {c}": 1 - r[c]["top1"] for c in erased} for m, r in rates.items()}
    esr = {c: scores["composed"][f"ESR-1 {c}"] for c in erased}
    extra_loss = scores["joint"]["PSR-1"] - scores["composed"]["PSR-1"] if joint is not None else None
    return {"erased": erased, "scores": scores, "esr1_composed": esr, "psr1_loss_beyond_joint": extra_loss,
            "esr_target_met": all(v >= 0.9 for v in esr.values()),
            "psr_target_met": None if extra_loss is None else extra_loss <= 0.05,
            "digests": {m: (e.digest if e is not None else None) for m, e in models.items()}}  # fmt: skip


def markdown(report: dict) -> str:
    lines = ["# Composing single-concept erasures on the mini model", "",
             f"Model: `mini`, fingerprint `{report['model_fingerprint']}`. Edits: EAP at the erasure benchmark's settings "
             f"(seed {SEED}), one concept each, composed with `Edit.compose` (deltas summed). Report settings: "
             f"`{json.dumps(REPORT)}` (`unsee compose-report`'s defaults), with the base model's ESR "
             "(`--base-esr`).", ""]  # fmt: skip
    t = report.get("report_10_timing")
    if t:
        trained = t.get("edits_trained", "the benchmark's")
        flag = " --time-short-edits" if "iterations" in trained else ""
        base = " with `--base-esr`" if t.get("base_esr", True) else " (without `--base-esr`)"
        lines += [f"`unsee compose-report` on the 10 edits{base}, timed as a user runs it (a fresh process, model load "
                  f"included, {t['cpus']} CPUs, `python benchmarks/compose.py --time-report{flag}`; the edits: "
                  f"{trained}; the command's default `--workers` is 2 on 2 cores):", "",
                  "| `--workers` | first report on the model (empty cache) | later reports (base model cached) |",
                  "|---|---|---|"]  # fmt: skip
        by = t.get("by_workers") or {"1": {"cold_seconds": t["cold_seconds"], "warm_seconds": t["warm_seconds"]}}
        for w, v in sorted(by.items()):
            lines.append(f"| {w} | {v['cold_seconds']:.0f} s | {v['warm_seconds']:.0f} s |")
        lines.append("")
        runs = [*report.get("report_10_timing_earlier", []), t]
        if len(runs) > 1:
            lines += ["The same table's `--workers 2` row in every run kept, oldest first (first report / later ones): "
                      + "; ".join(f"{r.get('date', 'undated')}: {r['cold_seconds']:.0f} / {r['warm_seconds']:.0f} s"
                                  + (" (with the base model's ESR, the default then)" if r.get("base_esr", True) else "")
                                  for r in runs) + ".", ""]  # fmt: skip
    a = report.get("report_10_against")
    if a:
        cold = a["cold_seconds"]
        lines += ["The first report (`--workers 2`, each code's default report), under an earlier commit's code and this "
                  "one's, one after the other "
                  "on the same idle machine (`python benchmarks/compose.py --time-against COMMIT --time-short-edits`): "
                  + ", ".join(f"{k} {v:.0f} s" for k, v in cold.items()) + ".", ""]  # fmt: skip
    dw = report.get("done_when")
    if dw:
        sc = dw["scores"]
        cs = dw["erased"]
        lines += ["## Two objects: composed vs erased together (the object protocol of benchmarks/erasure.py)", "",
                  "All 10 objects, 8 prompts x 4 seeds each, the oracle's top-k; PSR over the 8 objects neither edit "
                  "erases; ESR-1 strict also counts an erased prompt that draws the other erased object as a failure.", "",
                  "| model | " + " | ".join(f"ESR-1 {c}" for c in cs) + " | ESR-1 strict | PSR-1 | PSR-3 |",
                  "|---" * (len(cs) + 4) + "|"]  # fmt: skip
        for m, v in sc.items():
            strict = f"{100 * v['ESR-1-strict']:.1f}" if "ESR-1-strict" in v else "–"
            lines.append(f"| {m} | " + " | ".join(f"{100 * v[f'ESR-1 {c}']:.1f}" for c in cs)
                         + f" | {strict} | {100 * v['PSR-1']:.1f} | {100 * v['PSR-3']:.1f} |")  # fmt: skip
        esr = ", ".join(f"{c} {100 * v:.1f}%" for c, v in dw["esr1_composed"].items())
        met = {k: {True: "met", False: "not met", None: "pending"}[dw[f"{k}_target_met"]] for k in ("esr", "psr")}
        loss = dw["psr1_loss_beyond_joint"]
        loss = "– (the joint erasure is not trained yet)" if loss is None else f"{100 * loss:+.1f} points"
        lines += ["", f"ESR-1 of each concept under the composition: {esr} (target >= 90%: {met['esr']}). PSR-1 lost "
                  f"beyond the joint erasure's: {loss} (target <= 5: {met['psr']}).", ""]  # fmt: skip
    for k, r in report["compositions"].items():
        lines += [f"## {k} edits ({', '.join(r['composed']['concepts'])})", "",
                  f"Report written in {r['wall_seconds']:.0f} s wall, {r['cpu_seconds']:.0f} s CPU (threads: {r['threads']}).",
                  "", "| erased concept | ESR-1 base | ESR-1 alone | ESR-1 composed |", "|---" * 4 + "|"]  # fmt: skip
        for c, e in r["esr"].items():
            lines.append(f"| {c} | {100 * e['base']:.1f} | {100 * e['alone']:.1f} | {100 * e['composed']:.1f} |")
        alone = r["psr"]["alone"].values()
        lines += ["", f"PSR-1 ({len(r['psr']['prompts'])} kept prompts): base {100 * r['psr']['base']:.1f}, composed "
                  f"{100 * r['psr']['composed']:.1f}, each edit alone {100 * min(alone):.1f} to {100 * max(alone):.1f}. "
                  f"Spectrum: composed vs sum of singles Pearson {r['spectrum']['pearson']:.3f}, Spearman "
                  f"{r['spectrum']['spearman']:.3f}; most interfering: "
                  + ", ".join(f"{w} ({v:+.4f})" for w, v in r["spectrum"]["most_interfering"][:5]) + ".", "",
                  f"![grid of {k}]({r['grid']})", ""]  # fmt: skip
    if report["pending"]:
        lines += [f"Pending (edits not trained yet): compositions of {', '.join(map(str, report['pending']))}.", ""]
    return "\n".join(lines)


def timing_edits(pipe, fp: str, out: Path, short: bool) -> list[str]:
    """The 10 edits the timing runs on: the benchmark's own, or (``short``) the same concepts and settings trained for 2
    iterations, which change the same tensors and so give the report the same work (it does not depend on their
    values), where the benchmark's are not kept."""
    root = out.with_name(out.name + "_runs") / fp
    if not short:
        folders = [root / "edits" / name_of((c,)) for c in SINGLES]
        if not all((f / "edit.json").exists() for f in folders):
            raise SystemExit("the 10 edits are not trained yet: run `python benchmarks/compose.py --train-only`, or time "
                             "on short-trained edits of the same shape with --time-short-edits")  # fmt: skip
        return [str(f) for f in folders]
    folders = []
    for c in SINGLES:
        f = root / "timing_edits" / name_of((c,))
        if not (f / "edit.json").exists():
            cfg = edit_config((c,))
            cfg.iterations = 2
            erase(pipe, [c], cfg, torch.Generator().manual_seed(SEED)).save(f)
        folders.append(str(f))
    return folders


def time_against(out: Path, ref: str, short: bool = False) -> None:
    """The first (cold) report with ``--workers 2``, under another commit's code and this one's, one after the other
    on the same machine: a machine's speed drifts by more between sessions than a change saves. ``ref``: a git
    commit; its ``src`` is checked out into a temporary worktree and put first on PYTHONPATH. Written into
    OUT.json/.md as ``report_10_against``."""
    import subprocess
    import sys
    import tempfile

    pipe = load_pipeline("mini")
    fp = fingerprint(pipe)
    edits = timing_edits(pipe, fp, out, short)
    cli = Path(sys.executable).with_name("unsee")
    root = Path(__file__).resolve().parent.parent

    def rev(name: str) -> str:
        return subprocess.run(["git", "-C", str(root), "rev-parse", name], check=True, capture_output=True,
                              text=True).stdout.strip()  # fmt: skip

    sha, here = rev(ref), rev("HEAD")
    got: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", f"{tmp}/ref", sha], check=True,
                       capture_output=True)  # fmt: skip
        try:
            for name, path in ((sha[:12], f"{tmp}/ref/src"), (f"{here[:12]} (HEAD)", "")):
                env = dict(os.environ, PYTHONPATH=path)
                t0 = time.perf_counter()
                k = len(got)
                subprocess.run([str(cli), "compose-report", *edits, "--out", f"{tmp}/{k}", "--cache", f"{tmp}/cache{k}",
                                "--workers", "2"], check=True, capture_output=True, env=env)  # fmt: skip
                got[name] = time.perf_counter() - t0
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", f"{tmp}/ref"], capture_output=True)
    f = out.with_suffix(".json")
    report = json.loads(f.read_text())
    trained = "2 iterations (same tensors, same work)" if short else "the benchmark's"
    report["report_10_against"] = {"model_fingerprint": fp, "cpus": os.cpu_count(), "cold_seconds": got,
                                   "edits_trained": trained}  # fmt: skip
    write_report(out, report, markdown(report), default=str)


def time_report(out: Path, short: bool = False) -> None:
    """Wall time of the command a user runs, `unsee compose-report` on the 10 edits, in a fresh process: first with an
    empty cache, then again with the base model's images and spectrum outputs cached. Written into OUT.json/.md."""
    import subprocess
    import sys
    import tempfile

    pipe = load_pipeline("mini")
    fp = fingerprint(pipe)
    edits = timing_edits(pipe, fp, out, short)
    cli = Path(sys.executable).with_name("unsee")
    # base_esr: the command's default is without it; before 73300b1 the report drew the base model's ESR too
    timing = {"model_fingerprint": fp, "edits": len(edits), "cpus": os.cpu_count(), "by_workers": {},
              "edits_trained": "2 iterations (same tensors, same work)" if short else "the benchmark's",
              "base_esr": False}  # fmt: skip
    for workers in (2, 1):
        with tempfile.TemporaryDirectory() as tmp:
            t = timing["by_workers"][str(workers)] = {}
            for run in ("cold", "warm"):
                t0 = time.perf_counter()
                subprocess.run([str(cli), "compose-report", *edits, "--out", f"{tmp}/{run}", "--cache", f"{tmp}/cache",
                                "--workers", str(workers)], check=True, capture_output=True)  # fmt: skip
                t[f"{run}_seconds"] = time.perf_counter() - t0
    timing |= timing["by_workers"]["2"]  # the command's default on 2 cores
    timing["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    f = out.with_suffix(".json")
    report = json.loads(f.read_text())
    # Each run's figures are kept: this machine's speed drifts between sessions by more than a change saves.
    earlier = report.get("report_10_timing_earlier", [])
    if report.get("report_10_timing", {}).get("model_fingerprint") == fp:
        earlier.append(report["report_10_timing"])
    report["report_10_timing"], report["report_10_timing_earlier"] = timing, earlier
    write_report(out, report, markdown(report), default=str)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-only", action="store_true", help="only train the edits the compositions need")
    ap.add_argument(
        "--reverse",
        action="store_true",
        help="with --train-only: train in another order (a second process shares the training)",
    )
    ap.add_argument("--no-train", action="store_true", help="report the compositions whose edits are kept; train none")
    ap.add_argument("--time-report", action="store_true",
                    help="time `unsee compose-report` on the 10 edits: cold (an empty cache) then warm (base model cached); "
                    "run on idle cores")  # fmt: skip
    ap.add_argument("--time-short-edits", action="store_true",
                    help="with --time-report: time on the 10 edits trained for 2 iterations (the same work) where the "
                    "benchmark's own are not kept")  # fmt: skip
    ap.add_argument("--time-against", metavar="COMMIT", help="time the first report under COMMIT's code and then "
                    "this checkout's, one after the other (run on idle cores)")  # fmt: skip
    ap.add_argument("--out", default=str(RESULTS / "compose"))
    args = ap.parse_args()
    if args.time_against:
        time_against(Path(args.out), args.time_against, short=args.time_short_edits)
        return
    if args.time_report:
        time_report(Path(args.out), short=args.time_short_edits)
        return
    torch.set_num_threads(int(os.environ.get("UNSEE_THREADS", "2")))  # 1 when sharing the machine
    pipe = load_pipeline("mini")
    fp = fingerprint(pipe)
    out = Path(args.out)
    parts = out.with_name(out.name + "_runs") / fp
    parts.mkdir(parents=True, exist_ok=True)
    if args.train_only:
        # --reverse: the third to fifth concepts backwards first (the 5-composition is ready sooner), then the rest
        train_all(pipe, parts, fp, SINGLES[2:5][::-1] + SINGLES[5:][::-1] + SINGLES[:2] if args.reverse else SINGLES)
        return
    oracle = load_oracle()
    report: dict = {"model": "mini", "model_fingerprint": fp, "settings": {"edits": edit_config(("circle",)).to_dict(),
                    "seed": SEED, "report": REPORT}, "compositions": {}, "pending": []}  # fmt: skip
    for k in SIZES:
        concepts = SINGLES[:k]
        edits = [get_edit(pipe, parts, fp, (c,), train=not args.no_train) for c in concepts]
        if any(e is None for e in edits):
            report["pending"].append(k)
            continue
        report["compositions"][str(k)] = composition(pipe, oracle, edits, parts, k)
        if k == 2:
            joint = get_edit(pipe, parts, fp, concepts, train=not args.no_train)
            report["done_when"] = done_when(pipe, oracle, edits, joint, parts, fp)
    write_report(out, report, markdown(report), default=str)


if __name__ == "__main__":
    main()
