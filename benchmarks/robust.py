"""Erasures that hold under attack (issue 25): the robust method (equation 11) against esd, eap and
eap on the noxattn parameters, on the object protocol and under every attack and probe.

Three parts, each job's result kept under benchmarks/results/robust_runs/<fingerprint>/ as it
finishes (an interrupted run resumes; any number of processes may run at once: each claims a job through
a lock file, and they share nothing but that folder):

1. ``split``: the object protocol's 4 splits (erase 5 objects at once): ESR/PSR judged by the oracle,
   seconds per erasure, and the inversion and token-search ASR of every erased object at the budgets
   the attacks benchmark fixed (benchmarks/attacks.py: inversion 300 steps, token search 160).
2. ``budget``: "circle" erased alone; ASR against attack budget, up to 4x the robust method's inner
   budget (its attacker's steps over training: inner_steps x iterations).
3. ``probes``: the same circle erasures under the probes beyond the text channel (noise, completion,
   inpaint, guided), settings scaled from the published ones (see the report); each row is labelled
   avoidance or removal by the rule in ``kind()``.

4. ``screen``: variants of the robust method on circle erased alone (``--screen-rows``): what makes the
   defence stronger, at the fixed attack budget from two attack seeds.

Run: `.venv/bin/python benchmarks/robust.py [--device cuda]` (in as many processes as there are cores);
the report, benchmarks/results/robust.{json,md,png}, is written at the end of each (or `--report-only`).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import time
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from _report import judge_flags, write_report
from erasure import COMMON, SETTINGS, same_settings, synonyms_excluded
from unsee.attacks import AttackResult, AttackRun, asr_best_of, attack, attacks, make_config
from unsee.edits import Edit
from unsee.methods import config_class, erase
from unsee.methods import make_config as method_config
from unsee.models import fingerprint, load_pipeline, sampling_defaults
from unsee.world import OBJECTS
from unsee.world.attacks import ATTACK_BUDGETS, attack_target
from unsee.world.concepts import concept_images
from unsee.world.oracle import load_oracle
from unsee.world.protocols import SPLITS, Sampling, class_rates, judge_objects, object_scores

RESULTS = Path(__file__).parent / "results"
# The robust row: the method's defaults but 4 inner steps, the screen's winner below (the method keeps 2 by
# default: see RobustConfig.inner_steps for the guarantee test that 4 failed).
ROBUST = dict(inner_steps=4, lambda_adv=4.0, space="free", inner_lr=5e-3)
S2 = ROBUST | {"inner_steps": 2}  # the method's default
EAP = SETTINGS["eap"][1]
PPC_COMPANY = {"adv_per_concept": True, "inner_per_concept": True, "company": 0.5, "company_own": 0.5}
S6 = EAP | ROBUST | PPC_COMPANY | {"inner_steps": 6, "inner_batch_size": 2}
ROWS: dict[str, tuple[str, dict]] = {
    "esd": SETTINGS["esd"],
    "eap": SETTINGS["eap"],
    # Plain EAP on the other parameter set: a defence in itself, and the one to beat.
    "eap-noxattn": ("eap", EAP | {"params": "noxattn"}),
    "robust": ("robust", EAP | ROBUST),
    # Each concept's attacker on batch_size images of its own per inner step, as were its concept erased alone.
    "robust-pc": ("robust", EAP | ROBUST | {"inner_per_concept": True}),
    # Each concept's attacker token erased on batch_size images of its own per update (the outer term), and with it
    # the inner draws too: with 5 concepts the shared draws erase each token on a fifth of them.
    "robust-po": ("robust", EAP | ROBUST | {"adv_per_concept": True}),
    "robust-ppc": ("robust", EAP | ROBUST | {"adv_per_concept": True, "inner_per_concept": True}),
    # robust-ppc's attacker as a mixture over the vocabulary plus an offset: the token search attacks through words,
    # and robust-ppc halves the inversion (free embeddings) but not it.
    "robust-ppc-both": ("robust", EAP | ROBUST | {"adv_per_concept": True, "inner_per_concept": True, "space": "both"}),
    # robust-ppc trained in company: half the attacker's prompts follow 1-4 repeats of another erased object's name,
    # and in half of those the object's own word stands for the token (robust_tokens.md: the token search gets in
    # through the other erased objects' names; robust_company.md tests that company directly).
    "robust-ppc-company": ("robust", EAP | ROBUST | PPC_COMPANY),
    # robust-ppc-company with each concept's attacker taking 6 inner steps on 2 images of its concept (not 4 on 4):
    # more attacker steps per update for about the same rows (the circle screen: 2 -> 4 steps cut its inversion ASR
    # 38 -> 22%), so that the cost stays near robust-ppc-company's.
    "robust-ppc-company-s6": ("robust", S6),
    # The same row trained from another seed (TRAIN_SEED_OFFSET): how far one edit's ASR moves from another's.
    "robust-ppc-company-s6-r1": ("robust", S6),
    # EAP trained again from another seed (TRAIN_SEED_OFFSET): how far the baseline's ASR moves between its edits.
    "eap-r1": SETTINGS["eap"],
    # robust-ppc-company-s6 with its company drawn word by word from the other erased names and the tokenizer's whole
    # words (the token search's vocabulary): half the words the search finds against s6 name no erased object.
    "robust-ppc-words-s6": ("robust", S6 | {"company_words": "model"}),
    # The screen of what might make the defence stronger (circle erased alone), run on the earlier defaults (2 inner
    # steps): the attacker's steps, the adversarial term's weight, restarts, the attacker's space, eq. 11's inner gap
    # as written, and the parameters trained. Its winner, 4 inner steps, is the "robust" row.
    "robust-s2": ("robust", EAP | S2),
    "robust-s2-l1": ("robust", EAP | S2 | {"lambda_adv": 1.0}),
    "robust-s2-l8": ("robust", EAP | S2 | {"lambda_adv": 8.0}),
    "robust-s2-r40": ("robust", EAP | S2 | {"restart_every": 40}),
    "robust-r75": ("robust", EAP | ROBUST | {"restart_every": 75}),
    "robust-s2-both": ("robust", EAP | S2 | {"space": "both"}),
    "robust-s2-gap": ("robust", EAP | S2 | {"inner_gap": 1 / S2["lambda_adv"]}),
    "robust-s2-noxattn": ("robust", EAP | S2 | {"params": "noxattn"}),
    "robust-s2-full": ("robust", EAP | S2 | {"params": "full"}),
}
TRAIN_SEED_OFFSET = {"robust-ppc-company-s6-r1": 100, "eap-r1": 100}  # a replicate row: its edits' seeds are the split's + this
SCREEN = [r for r in ROWS if r.startswith("robust")]
SCREEN_SEEDS = (0, 1)  # the screen's inversion at the fixed budget, from two attack seeds
D_CE_SEED, D_C_SEED = 0, 1  # the defence's training images and the attacker's are different renders
N_IMAGES = 32
INNER_BUDGET = ROBUST["inner_steps"] * COMMON["iterations"]
# The fixed budget, the earlier defaults' inner budget (400), and the default's (800) up to 4x.
BUDGETS = {"inversion": (300, 400, INNER_BUDGET, 2 * INNER_BUDGET, 4 * INNER_BUDGET), "token-search": (160, 320, 640)}
CIRCLE_PARTS = ("inversion", "adaptive", "tokens", "probes")
RESTART_SEEDS = (1, 2)  # with seed 0's run at the same budget: 3 restarts
STEP_KEY = {"inversion": "inversion_steps", "token-search": "search_steps"}
# Probe grids scaled from "When Are Concepts Erased" (50 steps, guidance 7.5) to the mini's sampling:
PROBES = {
    # eta 1.0-1.85 in 6 x variance scale 1.00-1.04 in 4 published: the grid's ends and middle, 3 x 2.
    "noise": dict(etas=(1.0, 1.42, 1.85), variance_scales=(1.0, 1.04)),
    # The base model takes 1-3 of the 50 steps in the paper; here 1-3 of the mini's own steps (a larger share).
    "completion": dict(switch_steps=(1, 2, 3)),
    "inpaint": dict(mask_fractions=(0.5,)),  # the paper's centre 256x256 of 512x512
    # The paper's scales (25-193) multiply a latent classifier's gradient; here the oracle reads the decoded x0
    # prediction, whose gradient is on another scale. Calibrated on the base model (16 seeds of "a red square"
    # guided towards circle): mean p(circle) 0.002 unguided, 0.06 / 0.10 / 0.08 at scales 0.1 / 0.3 / 1, 0.009 at 3,
    # and 0 at 10-1000 (the step leaves the data). So 0.1-1, with deterministic and eta-1 DDIM.
    "guided": dict(scales=(0.1, 0.3, 1.0), etas=(0.0, 1.0)),
}


@dataclass(frozen=True)
class Plan:
    """What one run measures; ``quick()`` is the same run shrunk to seconds (checks the script, measures nothing)."""

    common: dict = field(default_factory=lambda: dict(COMMON))
    attack_budgets: dict = field(default_factory=lambda: dict(ATTACK_BUDGETS))
    budgets: dict = field(default_factory=lambda: dict(BUDGETS))
    probes: dict = field(default_factory=lambda: dict(PROBES))
    n_images: int = N_IMAGES
    inner_budget: int = INNER_BUDGET
    """The restarts' budget (the adaptive attacker)."""
    overrides: dict = field(default_factory=dict)
    """Settings for the methods that have them (after each row's own)."""

    @classmethod
    def quick(cls) -> Plan:
        tiny = dict(batch_size=2)
        return cls(common=COMMON | dict(iterations=2, batch_size=2, ddim_steps=2), overrides=dict(n_centres=5),
                   attack_budgets={"inversion": dict(inversion_steps=2) | tiny, "token-search": dict(search_steps=2) | tiny},
                   budgets={"inversion": (2, 3), "token-search": (2,)}, n_images=4, inner_budget=2,
                   probes={"noise": dict(etas=(1.5,), variance_scales=(1.0,)), "completion": dict(switch_steps=(1,)),
                           "inpaint": dict(mask_fractions=(0.5,)), "guided": dict(scales=(100.0,), etas=(0.0,))})  # fmt: skip


def edit_for(pipe, parts: Path, row: str, erasure: str, plan: Plan) -> Edit:
    """The row's edit of ``erasure`` ("split<i>" or "circle"), trained once and kept; a second process
    that needs it waits for the first (a lock file) instead of training it again."""
    folder = parts / "edits" / f"{row}_{erasure}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / "edit.json").exists():
            kept = Edit.load(folder)
            if same_settings(kept.config, row_config(row, erasure, plan)):
                return kept
            # else the row's settings changed since: the kept edit is another row's now, train this one
        return train_edit(pipe, folder, row, erasure, plan)


def row_config(row: str, erasure: str, plan: Plan):
    method, own = ROWS[row]
    concepts = list(SPLITS[int(erasure[5:])]) if erasure.startswith("split") else ["circle"]
    known = {f.name for f in fields(config_class(method))}
    extra = synonyms_excluded(method, concepts) | {k: v for k, v in plan.overrides.items() if k in known}
    return method_config(method, **(plan.common | own | extra))


def train_edit(pipe, folder: Path, row: str, erasure: str, plan: Plan) -> Edit:
    concepts = list(SPLITS[int(erasure[5:])]) if erasure.startswith("split") else ["circle"]
    seed = (int(erasure[5:]) if erasure.startswith("split") else 0) + TRAIN_SEED_OFFSET.get(row, 0)
    cfg = row_config(row, erasure, plan)
    kept = RESULTS / "erasure_runs" / folder.parent.parent.name / "edits" / folder.name
    if (kept / "edit.json").exists() and not cfg.uses_images:  # the erasure benchmark trained this very edit
        other = Edit.load(kept)
        if same_settings(other.config, cfg) and other.seed == seed and list(other.concepts) == concepts:
            other.save(folder)
            scored = json.loads((kept.parent.parent / f"{folder.name}.json").read_text())
            (folder / "seconds.json").write_text(json.dumps({"seconds": scored["seconds"], "device": "cpu",
                                                             "from": "benchmarks/erasure.py"}))  # fmt: skip
            return other
    kw = {"images": [concept_images(c, plan.n_images, D_CE_SEED) for c in concepts]} if cfg.uses_images else {}
    t0 = time.perf_counter()
    edit = erase(pipe, concepts, cfg, torch.Generator().manual_seed(seed), **kw)
    seconds = time.perf_counter() - t0
    edit.save(folder)
    (folder / "seconds.json").write_text(json.dumps({"seconds": seconds, "device": str(pipe.unet.device)}))
    return edit


def run_attack(pipe, judge, edit: Edit, concept: str, name: str, folder: Path, n: int, plan: Plan, seed: int = 0,
               **budget) -> AttackResult:  # fmt: skip
    if (folder / "attack.json").exists():
        kept = AttackResult.load(folder, learned=False)
        if kept.edit["digest"] == edit.digest:
            return kept  # else the edit was trained again (another device): attack the edit at hand
    target = attack_target(concept, concept_images(concept, plan.n_images, D_C_SEED), n_prompts=4, judge=judge)
    cfg = make_config(name, n=n, **({**plan.attack_budgets.get(name, {}), **plan.probes.get(name, {}), **budget}))
    run = AttackRun(folder / "run", checkpoint_every=100, resume=(folder / "run" / "checkpoint.pt").exists(), progress=False)
    r = attack(pipe, edit, target, cfg, torch.Generator().manual_seed(seed), run=run, eval_seed=0)
    r.save(folder)
    print(edit.method, concept, name, budget, f"ASR {r.asr:.2f}", flush=True)
    return r


@dataclass(frozen=True)
class Job:
    """One unit of work: an edit (with its protocol scores), or one attack on one edit. Workers claim jobs
    through a lock file each, so any number of processes share the list without splitting it by hand."""

    kind: str  # "edit" or "attack"
    row: str
    erasure: str  # "split<i>" or "circle"
    concept: str = ""
    attack: str = ""
    name: str = ""  # the attack's folder under attacks/<erasure>/<row>/
    seed: int = 0
    budget: tuple = ()  # (key, value) pairs over the attack's fixed budget

    @property
    def key(self) -> str:
        return "__".join(x for x in (self.kind, self.row, self.erasure, self.concept, self.name) if x)


def attack_folder(parts: Path, job: Job) -> Path:
    if job.erasure == "circle":
        return parts / "attacks" / "circle" / job.row / job.name
    return parts / "attacks" / job.erasure / job.row / job.concept / job.name


def jobs(args, plan: Plan) -> list[Job]:
    """Circle's edits first (every attack waits for its edit), the screen's attacks, each split's edits and attacks,
    and the circle parts' attacks last (the longest; a cut run loses them first)."""
    circle_rows = list(dict.fromkeys(args.circle_rows + args.screen_rows))
    out = [Job("edit", r, "circle") for r in circle_rows]
    b = plan.budgets["inversion"][0]  # the screen: the fixed budget from two seeds, on every screened row
    for row in args.screen_rows:
        out += [Job("attack", row, "circle", "circle", "inversion", f"inversion_{b}" + (f"_seed{s}" if s else ""),
                    seed=s, budget=(("inversion_steps", b),)) for s in SCREEN_SEEDS]  # fmt: skip
    for i in args.splits:  # split by split, so that a worker attacks one split's edits while another trains the next's
        out += [Job("edit", r, f"split{i}") for r in args.split_rows]
        out += [Job("attack", r, f"split{i}", c, a, a) for r in args.split_rows for a in args.split_attacks
                for c in SPLITS[i]]  # fmt: skip
        # Replicates: the same attack from other seeds on the same edit (evaluated on the same z_T, eval_seed 0).
        out += [Job("attack", r, f"split{i}", c, a, f"{a}_seed{s}", seed=s) for s in args.split_attack_seeds if s
                for r in args.split_rows for a in args.split_attacks for c in SPLITS[i]]  # fmt: skip
    for row in args.circle_rows:
        for part in args.circle_parts:
            a = {"inversion": "inversion", "tokens": "token-search"}.get(part)
            for b in plan.budgets[a] if a else ():
                out.append(Job("attack", row, "circle", "circle", a, f"{a}_{b}", budget=((STEP_KEY[a], b),)))
            if part == "adaptive":  # the attacker's other knobs: more vectors, and restarts (best kept)
                b = plan.budgets["inversion"][-1]
                out.append(Job("attack", row, "circle", "circle", "inversion", f"inversion_v4_{b}",
                               budget=(("n_vectors", 4), ("inversion_steps", b))))  # fmt: skip
                b = plan.inner_budget
                out += [Job("attack", row, "circle", "circle", "inversion", f"inversion_{b}_seed{s}", seed=s,
                            budget=(("inversion_steps", b),)) for s in RESTART_SEEDS]  # fmt: skip
            if part == "probes":
                out += [Job("attack", row, "circle", "circle", p, p) for p in PROBES if p in attacks()]
    return list(dict.fromkeys(out))


def done(job: Job, parts: Path) -> bool:
    edit_dir = parts / "edits" / f"{job.row}_{job.erasure}"
    if not (edit_dir / "edit.json").exists():
        return False
    digest = Edit.load(edit_dir).digest
    if job.kind == "edit":
        f = scores_file(parts, job.row, job.erasure)
        return f.exists() and json.loads(f.read_text()).get("edit_digest") == digest
    f = attack_folder(parts, job) / "attack.json"
    return f.exists() and json.loads(f.read_text())["edit"]["digest"] == digest


def scores_file(parts: Path, row: str, erasure: str) -> Path:
    return parts / ("split" if erasure.startswith("split") else "circle_scores") / f"{row}_{erasure}.json"


def do_job(job: Job, pipe, judge, parts: Path, args, plan: Plan) -> None:
    edit = edit_for(pipe, parts, job.row, job.erasure, plan)
    if job.kind == "edit":
        f = scores_file(parts, job.row, job.erasure)
        if not f.exists() or json.loads(f.read_text()).get("edit_digest") != edit.digest:
            d = sampling_defaults("mini")
            s = Sampling(n=args.n, seed=0, steps=d.steps, guidance_scale=d.guidance_scale)
            with edit.applied(pipe):
                rates = class_rates(judge_objects(pipe, judge, OBJECTS, s))
            seconds = json.loads((parts / "edits" / f"{job.row}_{job.erasure}" / "seconds.json").read_text())
            erased = SPLITS[int(job.erasure[5:])] if job.erasure.startswith("split") else ("circle",)
            f.parent.mkdir(parents=True, exist_ok=True)
            res = object_scores(rates, erased) | seconds | {"edit_digest": edit.digest, "per_class": rates}
            f.write_text(json.dumps(res, indent=1))
        return
    run_attack(pipe, judge, edit, job.concept, job.attack, attack_folder(parts, job), args.attack_n, plan,
               seed=job.seed, **dict(job.budget))  # fmt: skip


def work(all_jobs: list[Job], pipe, judge, parts: Path, args, plan: Plan) -> None:
    """Run every job no other process holds. The first pass skips attacks whose edit is not trained yet
    (another process is training it); the second takes them, waiting on the edit's lock."""
    locks = parts / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    for wait in (False, True):
        for job in all_jobs:
            if done(job, parts):
                continue
            if not wait and job.kind == "attack" and not (parts / "edits" / f"{job.row}_{job.erasure}" / "edit.json").exists():
                continue
            with open(locks / f"{job.key}.lock", "w") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another process has it
                if done(job, parts):
                    continue
                try:
                    do_job(job, pipe, judge, parts, args, plan)
                except Exception:  # one broken job must not cost the others (a GPU lease is short)
                    print("FAILED", job, traceback.format_exc(), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--split-rows",
        nargs="*",
        default=["eap", "eap-noxattn", "robust"],
        choices=list(ROWS),
        help="rows of the object protocol under attack (esd's split ASR is in benchmarks/results/attacks.md)",
    )
    ap.add_argument(
        "--circle-rows",
        nargs="*",
        default=["esd", "eap", "robust"],
        choices=list(ROWS),
        help="rows of the budget sweep and the probes, on circle erased alone",
    )
    ap.add_argument(
        "--circle-parts",
        nargs="*",
        default=list(CIRCLE_PARTS),
        choices=list(CIRCLE_PARTS),
        help="the circle jobs: inversion and token-search budget sweeps, the adaptive attacker, the probes",
    )
    ap.add_argument(
        "--screen-rows",
        nargs="*",
        default=[],
        choices=list(ROWS),
        help=f"rows screened on circle erased alone: protocol scores and inversion at the fixed budget from "
        f"{len(SCREEN_SEEDS)} seeds (the robust variants: {' '.join(SCREEN)})",
    )
    ap.add_argument("--splits", nargs="+", type=int, default=list(range(len(SPLITS))))
    ap.add_argument("--split-attack-seeds", nargs="+", type=int, default=[0], help="attack seeds of the object "
                    "protocol's attacks (seed 0 is the table's; the others are replicates on the same edits, "
                    "reported per seed, averaged and as the best of the seeds)")  # fmt: skip
    ap.add_argument(
        "--split-attacks",
        nargs="+",
        default=["inversion", "token-search"],
        choices=["inversion", "token-search"],
        help="the object protocol's attacks, at every seed of --split-attack-seeds",
    )
    ap.add_argument("--n", type=int, default=4, help="images per prompt of the object protocol (8 prompts per class)")
    ap.add_argument("--attack-n", type=int, default=8, help="seeds per attack prompt (4 prompts)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--list-jobs", action="store_true", help="print the jobs and stop")
    ap.add_argument("--note", default=None, help="a sentence the report must carry (where and how it was measured)")
    ap.add_argument("--quick", action="store_true", help="every job shrunk to seconds, to check the script (measures nothing)")
    ap.add_argument("--runs", default=str(RESULTS / "robust_runs"))
    ap.add_argument("--out", default=str(RESULTS / "robust"))
    args = ap.parse_args()
    if args.list_jobs:
        for j in jobs(args, Plan()):
            print(j.key)
        return
    torch.set_num_threads(int(os.environ.get("UNSEE_THREADS", "2")))
    pipe = load_pipeline("mini", device=args.device)
    judge = load_oracle(device=args.device)
    fp = fingerprint(pipe)
    plan = Plan.quick() if args.quick else Plan()
    parts = Path(args.runs) / fp
    parts.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        work(jobs(args, plan), pipe, judge, parts, args, plan)
    report, md = summarise(parts, fp, args, plan)
    if args.note:
        report["note"] = args.note
        md = md.replace("\n\n", f"\n\nNote: {args.note}\n\n", 1)
    write_report(args.out, report, md)
    if report["budget"]:
        plot_budget(report, Path(args.out).with_suffix(".png"))


def plot_budget(report: dict, path: Path) -> None:
    """ASR against attack budget, one panel per attack, one line per method; the inner budget marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks_ = list(report["budgets"])
    fig, axes = plt.subplots(1, len(attacks_), figsize=(5 * len(attacks_), 3.6), squeeze=False)
    for ax, a in zip(axes[0], attacks_):
        for row, by in report["budget"].items():
            pts = sorted((int(b), v) for b, v in by.get(a, {}).items())
            if pts:
                ax.plot([b for b, _ in pts], [100 * v for _, v in pts], marker="o", label=row)
        if a == "inversion":
            ax.axvline(report["inner_budget"], color="grey", ls=":", label="robust's inner budget")
        ax.set(title=f"{a} on circle", xlabel="attack steps", ylabel="ASR (%)", ylim=(-3, 103))
        ax.legend(fontsize=8)
    fig.suptitle(f"ASR against attack budget (mini {report['model_fingerprint']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def kind(asr_by_probe: dict[str, float], unattacked: float) -> str:
    """Not erased when the plain prompts still show the concept on more than half the seeds; otherwise
    removal when no probe brings it back on more than 20% of seeds beyond what the plain prompts show,
    and avoidance when one does (the concept is still drawable: only the prompt's path to it was closed)."""
    if unattacked > 0.5:
        return "not erased"
    worst = max((v - unattacked for v in asr_by_probe.values()), default=0.0)
    return "removal" if worst <= 0.20 else "avoidance"


def replicates(parts: Path, row: str, per_split: list[dict]) -> dict:
    """Per attack with replicate seeds on ``row``'s scored split edits: the ASR per attack seed, their mean and the
    best of the seeds, each over the objects that every seed attacked (so that the seeds' rates are paired)."""
    out = {}
    for a in ("inversion", "token-search"):
        by_object: dict[tuple[int, str], dict[int, AttackResult]] = {}  # (split, object) -> seed -> result
        for sc in per_split:
            i = sc["split"]
            digest = json.loads(scores_file(parts, row, f"split{i}").read_text()).get("edit_digest")
            for c in SPLITS[i]:
                d = parts / "attacks" / f"split{i}" / row / c
                found = {0: d / a} | {int(f.name.rsplit("_seed", 1)[1]): f for f in d.glob(f"{a}_seed*")}
                got = {s: AttackResult.load(f, learned=False) for s, f in found.items() if (f / "attack.json").exists()}
                got = {s: r for s, r in got.items() if r.edit["digest"] == digest}
                if len(got) > 1:
                    by_object[(i, c)] = got
        seeds = sorted({s for got in by_object.values() for s in got})
        paired = [got for got in by_object.values() if len(got) == len(seeds)]
        if not paired:
            continue
        rates = {str(s): sum(got[s].asr for got in paired) / len(paired) for s in seeds}
        best = sum(asr_best_of(list(got.values())) for got in paired) / len(paired)
        out[a] = {"objects": len(paired), "per_seed": rates, "mean": sum(rates.values()) / len(rates), "best_of": best}
    return out


def summarise(parts: Path, fp: str, args, plan: Plan) -> tuple[dict, str]:
    flags = judge_flags(fp)
    report: dict = {"model_fingerprint": fp, "settings": vars(args),
                    "common": plan.common, "rows": {r: ROWS[r][1] for r in ROWS},
                    "attack_budgets": plan.attack_budgets, "budgets": plan.budgets, "inner_budget": INNER_BUDGET,
                    "split": {}, "budget": {}, "adaptive": {}, "probes": {}, "circle_edits": {}, "screen": {},
                    "judge_flagged": sorted(flags)}  # fmt: skip
    for row in ROWS:
        per_split = []
        for i in range(len(SPLITS)):  # every split measured, whichever this process ran
            f = parts / "split" / f"{row}_split{i}.json"
            if not f.exists():
                continue
            res = json.loads(f.read_text())
            asr = {}
            for a in ("inversion", "token-search"):
                kept = [parts / "attacks" / f"split{i}" / row / c / a for c in SPLITS[i]]
                got = [AttackResult.load(d, learned=False) for d in kept if (d / "attack.json").exists()]
                got = [r for r in got if r.edit["digest"] == res.get("edit_digest")]  # on the edit scored above
                if got:  # a cut run may have attacked only some of the split's objects: the count says so
                    asr[a] = sum(r.asr for r in got) / len(got)
                    asr[f"{a} concepts"] = len(got)
                    asr["unattacked"] = sum(r.asr_unattacked for r in got) / len(got)
            per_split.append({"split": i, **{k: res[k] for k in ("ESR-1", "ESR-3", "PSR-1", "PSR-3", "seconds")}, "asr": asr})
        if per_split:
            report["split"][row] = per_split
            reps = replicates(parts, row, per_split)
            if reps:
                report.setdefault("replicates", {})[row] = reps
        circle = parts / "attacks" / "circle" / row
        # Which edit each circle result was made on: a GPU re-run retrains the edit, not bit for bit.
        digests = sorted({json.loads(f.read_text())["edit"]["digest"] for f in circle.glob("*/attack.json")})
        if digests:
            report["circle_edits"][row] = digests
        for a, steps in plan.budgets.items():
            for b in steps:
                d = circle / f"{a}_{b}"
                if (d / "attack.json").exists():
                    report["budget"].setdefault(row, {}).setdefault(a, {})[b] = AttackResult.load(d, learned=False).asr
        b = plan.budgets["inversion"]
        v4, restarts = circle / f"inversion_v4_{b[-1]}", [circle / f"inversion_{plan.inner_budget}"] + [
            circle / f"inversion_{plan.inner_budget}_seed{s}" for s in RESTART_SEEDS]  # fmt: skip
        if (v4 / "attack.json").exists():
            report["adaptive"].setdefault(row, {})[f"4 vectors, {b[-1]} steps"] = AttackResult.load(v4, learned=False).asr
        got = [AttackResult.load(d, learned=False) for d in restarts if (d / "attack.json").exists()]
        if len(got) == len(restarts) and len({r.edit["digest"] for r in got}) == 1:  # restarts of one edit
            key = f"best of {len(restarts)} restarts, {plan.inner_budget} steps"
            report["adaptive"].setdefault(row, {})[key] = asr_best_of(got)
        for p in plan.probes:
            if (circle / p / "attack.json").exists():
                r = AttackResult.load(circle / p, learned=False)
                report["probes"].setdefault(row, {})[p] = {"asr": r.asr, "unattacked": r.asr_unattacked, "config": r.config}
    lines = ["# Robust erasure (equation 11) under attack", "",
             f"Model `mini`, fingerprint `{fp}`. Shared settings `{json.dumps(plan.common)}`; rows add "
             f"`{json.dumps(report['rows'])}`. "
             f"ASR: a seed counts when the plain or the attacked prompt shows the erased object (the oracle's top-1), over 4 "
             f"colour prompts x {args.attack_n} seeds; budgets as the attacks benchmark fixed them "
             f"(`{json.dumps(plan.attack_budgets)}`), D_c = {plan.n_images} renders (seed {D_C_SEED}); the robust method "
             f"learns from other renders (seed {D_CE_SEED}).", "",
             "## Object protocol, mean over the splits measured", "",
             "| method | splits | ESR-1 | PSR-1 | ESR-3 | PSR-3 | inversion ASR | token-search ASR | unattacked | objects "
             "attacked (inv / ts) | s / erasure |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip

    def count(rows: list, attack: str) -> int:
        return sum(r["asr"].get(f"{attack} concepts", 0) for r in rows)

    def mean(rows: list, key: str, sub: str | None = None) -> str:
        vals = [(r[sub] if sub else r).get(key) for r in rows]
        vals = [v for v in vals if v is not None]
        return f"{100 * sum(vals) / len(vals):.1f}" if vals else "–"

    for row, rows in report["split"].items():
        if not rows:
            continue
        secs = sum(r["seconds"] for r in rows) / len(rows)
        lines.append(f"| {row} | {len(rows)} | {mean(rows, 'ESR-1')} | {mean(rows, 'PSR-1')} | {mean(rows, 'ESR-3')} | "
                     f"{mean(rows, 'PSR-3')} | {mean(rows, 'inversion', 'asr')} | {mean(rows, 'token-search', 'asr')} | "
                     f"{mean(rows, 'unattacked', 'asr')} | {count(rows, 'inversion')} / {count(rows, 'token-search')} of "
                     f"{5 * len(rows)} | {secs:.0f} |")  # fmt: skip
    if report.get("replicates"):
        lines += [
            "",
            "### The same attacks from other seeds, on the same edits",
            "",
            "Each replicate is the attack run again from another seed on the same edit, evaluated on the same "
            "seeds (eval seed 0), over the objects every seed attacked. Best of seeds: a seed counts when any "
            "run's attacked prompt (or the plain prompt) shows the object: an attacker who restarts.",
            "",
            "| method | attack | objects | ASR per attack seed | mean | best of seeds |",
            "|---" * 6 + "|",
        ]
        for row, by in report["replicates"].items():
            for a, v in by.items():
                per = " / ".join(f"{k}: {100 * x:.1f}" for k, x in v["per_seed"].items())
                lines.append(f"| {row} | {a} | {v['objects']} | {per} | {100 * v['mean']:.1f} | "
                             f"{100 * v['best_of']:.1f} |")  # fmt: skip
    same = sorted((parts / "gpu_split").glob("*_split*.json"))
    if same:  # one GPU run that trained every row's edits side by side: the only like-for-like wall times
        by: dict[str, list[dict]] = {}
        for f in same:
            by.setdefault(f.stem.rsplit("_split", 1)[0], []).append(json.loads(f.read_text()))
        report["same_run"] = {r: {k: sum(x[k] for x in v) / len(v) for k in ("ESR-1", "PSR-1", "ESR-3", "PSR-3", "seconds")}
                              | {"splits": len(v)} for r, v in by.items()}  # fmt: skip
        eap_s = report["same_run"].get("eap", {}).get("seconds")
        lines += ["", "Cost, and the protocol on the same edits, from one run that trained every row's 4 split edits side "
                  "by side (NVIDIA H200, 16 workers under CUDA MPS; the edits themselves did not come back, so the "
                  "attacks above are on edits trained again):", "",
                  "| method | splits | ESR-1 | PSR-1 | ESR-3 | PSR-3 | s / erasure | x eap |", "|---" * 8 + "|"]  # fmt: skip
        for r, v in report["same_run"].items():
            ratio = f"{v['seconds'] / eap_s:.2f}" if eap_s else "–"
            lines.append(f"| {r} | {v['splits']} | {100 * v['ESR-1']:.1f} | {100 * v['PSR-1']:.1f} | {100 * v['ESR-3']:.1f} | "
                         f"{100 * v['PSR-3']:.1f} | {v['seconds']:.0f} | {ratio} |")  # fmt: skip
    lines += ["", "## ASR against attack budget (circle erased alone)", "",
              "Edits attacked (digests; more than one where the edit was trained again between runs): "
              + "; ".join(f"{r} {', '.join(d)}" for r, d in report["circle_edits"].items()) + ".", "",
              f"The robust method's attacker took {INNER_BUDGET} inversion steps over its training "
              f"({ROBUST['inner_steps']} per update); budgets go to 4x that.", ""]  # fmt: skip
    for a, steps in plan.budgets.items():
        lines += ["| method | " + " | ".join(f"{a} {b}" for b in steps) + " |", "|---" * (len(steps) + 1) + "|"]
        for row, by in report["budget"].items():
            lines.append(
                f"| {row} | " + " | ".join(f"{100 * by[a][b]:.0f}%" if b in by.get(a, {}) else "–" for b in steps) + " |"
            )
        lines.append("")
    if report["adaptive"]:
        keys = list(dict.fromkeys(k for by in report["adaptive"].values() for k in by))
        lines += [
            "Inversion with the attacker's other knobs (more vectors per token; restarts from other seeds, the best "
            "kept per evaluation seed):",
            "",
            "| method | " + " | ".join(keys) + " |",
            "|---" * (len(keys) + 1) + "|",
        ]
        for row, by in report["adaptive"].items():
            lines.append(f"| {row} | " + " | ".join(f"{100 * by[k]:.0f}%" if k in by else "–" for k in keys) + " |")
        lines.append("")
    b = plan.budgets["inversion"][0]
    for row in ROWS:
        f = scores_file(parts, row, "circle")
        if not f.exists():
            continue
        sc = json.loads(f.read_text())
        got = [circle_dir / row / (f"inversion_{b}" + (f"_seed{s}" if s else "")) for s in SCREEN_SEEDS
               for circle_dir in [parts / "attacks" / "circle"]]  # fmt: skip
        got = [AttackResult.load(d, learned=False) for d in got if (d / "attack.json").exists()]
        got = [r for r in got if r.edit["digest"] == sc["edit_digest"]]
        report["screen"][row] = {k: sc[k] for k in ("ESR-1", "PSR-1", "ESR-3", "PSR-3", "seconds")} | {
            "settings": ROWS[row][1], "inversion": [r.asr for r in got], "edit_digest": sc["edit_digest"]}  # fmt: skip
    if report["screen"]:
        lines += ["## What makes the defence stronger: a screen on circle erased alone", "",
                  f"Each row trained once (seed 0) and attacked by inversion at the fixed budget ({b} steps) from "
                  f"{len(SCREEN_SEEDS)} attack seeds; ESR/PSR from the object protocol with circle erased alone "
                  "(PSR over the other 9 objects).", "",
                  "| row | differs from robust | ESR-1 | PSR-1 | inversion ASR (per seed) | mean | s / erasure |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        base_row = ROWS["robust"][1]
        for row, sc in report["screen"].items():
            diff = {k: v for k, v in sc["settings"].items() if base_row.get(k) != v} if row.startswith("robust") else row
            inv = sc["inversion"]
            lines.append(f"| {row} | {json.dumps(diff) if isinstance(diff, dict) else '(' + diff + ')'} | "
                         f"{100 * sc['ESR-1']:.0f} | {100 * sc['PSR-1']:.1f} | "
                         f"{' / '.join(f'{100 * v:.0f}' for v in inv) or '–'} | "
                         f"{(f'{100 * sum(inv) / len(inv):.0f}%') if inv else '–'} | {sc['seconds']:.0f} |")  # fmt: skip
        lines.append("")
    if report["probes"]:
        lines += ["## Probes beyond the text channel (circle erased alone)", "",
                  "| method | unattacked | " + " | ".join(plan.probes) + " | kind |",
                  "|---" * (len(plan.probes) + 3) + "|"]  # fmt: skip
        for row, by in report["probes"].items():
            un = next(iter(by.values()))["unattacked"]
            k = kind({p: v["asr"] for p, v in by.items()}, un) if len(by) == len(plan.probes) else "–"
            report["probes"][row]["kind"] = k
            cells = [f"{100 * by[p]['asr']:.0f}%" if p in by else "–" for p in plan.probes]
            lines.append(f"| {row} | {100 * un:.0f}% | " + " | ".join(cells) + f" | {k} |")
        lines += ["", kind.__doc__.replace("\n   ", "").strip(), ""]
    return report, "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
