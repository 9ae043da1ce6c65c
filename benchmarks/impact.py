"""The talk's impact observations, measured on the mini world (issue: impact analysis).

Every concept of the world (10 objects, 8 colours, 4 styles) is erased alone with ESD-x, and each
edit's sensitivity spectrum is taken over the whole concept vocabulary (the tokenizer's words and
the neutral prompts). From those 22 spectra:
  a. does erasing an object affect its own family more than the other families (mean-impact ratio)?
     And why not, where it does not: do family members share words / text embeddings?
  b. where do the neutral prompts fall in each spectrum (percentile, 0 = most affected)?
  c. which preserved concept keeps the rest best: the most sensitive, a mid-spectrum one, or ""
     (equation 1 with that c_n), as PSR-1 on the other objects;
  d. how well does text-embedding similarity predict impact (Spearman; pooled and full embeddings)?
  e. the spectrum against empirical impact (same seeds through both models: image distance and the
     oracle's accuracy drop; Spearman);
  f. the impact predictor f_phi (Idea 2) on held-out erased concepts vs text similarity;
  s. speed: one spectrum with a warm cache vs a plain per-concept loop, same run.
Edits, spectra and measurements are saved as they finish, so an interrupted run continues.
Writes benchmarks/results/impact.{json,md} and impact_*.png; ``--ship`` also writes the predictor
trained on all 22 erasures to src/unsee/assets/impact_predictor (used by ``eap --adversary predicted``).
Run: `.venv/bin/python benchmarks/impact.py [--ship]`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from _report import write_report
from unsee.edits import Edit
from unsee.impact.empirical import empirical_impact, extremes_grid
from unsee.impact.predictor import (
    FEATURES,
    PredictorConfig,
    concept_features,
    impact_targets,
    pair_features,
    train_predictor,
)
from unsee.impact.spectrum import (
    Spectrum,
    concept_prompt,
    concept_vocabulary,
    make_draws,
    plot_spectrum,
    spectrum,
    spectrum_plain_loop,
)
from unsee.methods import erase, make_config
from unsee.metrics.judged import judge_prompts
from unsee.models import fingerprint, load_pipeline
from unsee.world import BACKGROUNDS, COLOUR_NAMES, FAMILIES, FAMILY_OF, NEUTRAL_PROMPTS, OBJECTS
from unsee.world.captions import JUDGE_LABELS
from unsee.world.oracle import load_oracle, oracle_label
from unsee.world.protocols import Sampling, class_prompts, class_rates, judge_objects

RESULTS = Path(__file__).parent / "results"
SHIP = Path(__file__).resolve().parent.parent / "src" / "unsee" / "assets" / "impact_predictor"
ERASE = dict(params="xattn", iterations=80, lr=3e-4, batch_size=4, template="a {}")
HELD_OUT = ("ring", "hexagon", "cross", "teal", "pink", "dotted")
FOLDS = 4
EMPIRICAL = ("circle", "square", "arrow", "star")
CHOICE = ("circle", "square", "arrow", "star")


def ms(v) -> dict:
    v = [x for x in v if x == x]
    return {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}


def load_or(path: Path, make):
    if path.exists():
        return json.loads(path.read_text())
    v = make()
    path.write_text(json.dumps(v, indent=1))
    return v


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(RESULTS / "impact"))
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--ship", action="store_true", help="write the predictor trained on every erasure into the package")
    ap.add_argument(
        "--ship-only",
        action="store_true",
        help="only the erasures and their spectra, then ship the predictor (no report; a full run reuses them)",
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = Path(args.out)
    pipe, oracle = load_pipeline("mini"), load_oracle()
    runs = out.with_name(out.name + "_runs") / fingerprint(pipe)  # per base model: a retrained model starts afresh
    (runs / "spectra").mkdir(parents=True, exist_ok=True)
    vocab = concept_vocabulary(pipe)
    words = list(vocab.words)
    draws = make_draws(pipe, args.draws)
    cache = runs / "cache"
    erased = list(OBJECTS) + list(COLOUR_NAMES) + list(BACKGROUNDS)
    spectra: dict[str, Spectrum] = {}
    for c in erased:
        folder = runs / "edits" / c
        if not (folder / "edit.json").exists():
            erase(pipe, [c], make_config("esd", **ERASE), torch.Generator().manual_seed(0)).save(folder)
        f = runs / "spectra" / f"{c}.json"
        if not f.exists():
            spec = spectrum(pipe, Edit.load(folder), vocab, draws, cache_dir=cache)
            f.write_text(json.dumps(spec.to_dict()))
        d = json.loads(f.read_text())
        spectra[c] = Spectrum(tuple(d["scores"]), torch.tensor(list(d["scores"].values())), tuple(d["concepts"]), d["method"])
        print(c, "ok", flush=True)
    impact = {c: -s.scores for c, s in spectra.items()}  # higher = more affected
    report: dict = {"model_fingerprint": fingerprint(pipe), "erase_settings": ERASE, "draws": args.draws, "vocabulary": words,
                    "erase_seconds": ms([Edit.load(runs / "edits" / c).info["seconds"] for c in erased])}  # fmt: skip
    feats = concept_features(pipe, vocab, draws, cache)
    if args.ship_only:
        train_shipped(feats, spectra, fingerprint(pipe)).save(SHIP)
        print("shipped the impact predictor to", SHIP)
        return
    W = lambda w: words.index(w)  # noqa: E731

    # a. family
    ratios, text_ratios = {}, {}
    unit = lambda x: torch.nn.functional.normalize(x, dim=-1)  # noqa: E731
    cos_pooled, cos_full = unit(feats.pooled) @ unit(feats.pooled).T, unit(feats.full) @ unit(feats.full).T
    for o in OBJECTS:
        same = [x for x in FAMILIES[FAMILY_OF[o]] if x != o]
        other = [x for x in OBJECTS if FAMILY_OF[x] != FAMILY_OF[o]]
        ratios[o] = float(np.mean([impact[o][W(x)] for x in same]) / np.mean([impact[o][W(x)] for x in other]))
        text_ratios[o] = {k: float(np.mean([m[W(o), W(x)] for x in same]) - np.mean([m[W(o), W(x)] for x in other]))
                          for k, m in (("pooled", cos_pooled), ("full", cos_full))}  # fmt: skip
    report["a_family"] = {"impact_ratio": {"per_object": ratios, **ms(ratios.values())},
                          "text_cosine_gap": {k: {"per_object": {o: v[k] for o, v in text_ratios.items()},
                                                  **ms([v[k] for v in text_ratios.values()])} for k in ("pooled", "full")},
                          "family_word_impact_rank": {o: sorted(words, key=lambda w: -float(impact[o][W(w)])).index(FAMILY_OF[o])
                                                      for o in OBJECTS}}  # fmt: skip
    # a'. what an erased object's prompts draw instead, and whether it stays in the family
    became = {}
    for o in OBJECTS:
        f = runs / f"became_{o}.json"
        if not f.exists():
            with Edit.load(runs / "edits" / o).applied(pipe):
                res = judge_prompts(pipe, oracle, class_prompts(o), n=2, seed=100 * OBJECTS.index(o), k=1)
            f.write_text(json.dumps([r.topk["object"][k][0] for r in res for k in range(len(r.topk["object"]))]))
        became[o] = json.loads(f.read_text())
    same_family = [np.mean([FAMILY_OF[b] == FAMILY_OF[o] and b != o for b in v]) for o, v in became.items()]
    report["a_family"]["erased_became"] = {o: {b: v.count(b) for b in sorted(set(v))} for o, v in became.items()}
    report["a_family"]["erased_became_same_family"] = ms(same_family)
    report["a_family"]["same_family_by_chance"] = float(np.mean([(len(FAMILIES[FAMILY_OF[o]]) - 1) / (len(OBJECTS) - 1)
                                                                 for o in OBJECTS]))  # fmt: skip
    # b. neutral percentiles (0 = most affected)
    neutral = [repr(p) for p in NEUTRAL_PROMPTS]
    report["b_neutral_percentile"] = {n: {"per_erasure": {c: spectra[c].percentile(n) for c in erased},
                                          **ms([spectra[c].percentile(n) for c in erased])} for n in neutral}  # fmt: skip
    # d. text similarity vs impact
    rho = {"pooled_cosine": [], "full_l2": [], "eps_cosine": [], "xattn_value_cosine": []}
    for c in erased:
        i, others = W(c), [j for j in range(len(words)) if j != W(c)]
        y = impact[c][others]
        rho["pooled_cosine"].append(spearmanr(cos_pooled[i, others], y).statistic)
        rho["full_l2"].append(spearmanr(-(feats.full[others] - feats.full[i]).norm(dim=-1), y).statistic)
        e = torch.nn.functional.normalize(feats.eps, dim=-1)
        rho["eps_cosine"].append(spearmanr(e[others] @ e[i], y).statistic)
        rho["xattn_value_cosine"].append(spearmanr(feats.values[others] @ feats.values[i], y).statistic)
    report["d_similarity_spearman"] = {k: {"per_erasure": dict(zip(erased, v)), **ms(v)} for k, v in rho.items()}
    # e. empirical impact
    emp = {}
    for c in EMPIRICAL:
        f = runs / f"empirical_{c}.json"
        if not f.exists():
            concepts = [w for w in words if oracle_label(w) or w in neutral]
            e = empirical_impact(pipe, Edit.load(runs / "edits" / c), concepts, judge=oracle, labels=JUDGE_LABELS, n=4)
            f.write_text(json.dumps({**e.to_dict(), **e.agreement(spectra[c], exclude=[c])}))
        emp[c] = json.loads(f.read_text())
    report["e_empirical"] = {"per_erasure": emp,
                             "spearman_distance": ms([v["spearman_distance"] for v in emp.values()]),
                             "spearman_accuracy_drop": ms([v["spearman_accuracy_drop"] for v in emp.values()])}  # fmt: skip
    # f. the impact predictor on held-out erased concepts
    report["f_predictor"] = predictor_eval(feats, spectra, erased, words, fingerprint(pipe), args.ship)
    # c. which c_n preserves best
    report["c_preserved_choice"] = preserved_choice(pipe, oracle, spectra, words, runs)
    # s. speed, same run: warm-cache spectrum vs a plain loop over the whole vocabulary
    edit = Edit.load(runs / "edits" / "circle")
    t0 = time.perf_counter()
    warm = spectrum(pipe, edit, vocab, draws, cache_dir=cache)
    t_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = spectrum_plain_loop(pipe, edit, [concept_prompt(w) for w in words], draws)
    t_loop = time.perf_counter() - t0
    report["s_speed"] = {"spectrum_warm_cache_s": t_warm, "plain_loop_s": t_loop, "speedup": t_loop / t_warm,
                         "max_abs_difference": float((warm.scores - plain.scores).abs().max()),
                         "vocabulary_size": len(words), "draws": args.draws}  # fmt: skip
    plots(report, spectra, out, pipe, oracle, runs)
    report["markdown"] = markdown(report)
    write_report(out, report, report["markdown"], indent=1, default=float)


def rank_spearman(pred: torch.Tensor, truth: torch.Tensor) -> float:
    return float(spearmanr(pred.numpy(), truth.numpy()).statistic)


BASELINES = {"text_pooled_cosine": "text_pooled_cos", "text_full_l2": "text_full_neg_l2", "eps_cosine": "eps_cos",
             "cross_attention_value_cosine": "value_cos"}  # fmt: skip


def train_shipped(feats, spectra, fp):
    """The predictor that ships: trained on every erasure, tied to the base model's fingerprint."""
    return train_predictor(feats, spectra, PredictorConfig(), generator=torch.Generator().manual_seed(0), base_fingerprint=fp)


def predictor_eval(feats, spectra, erased, words, fp, ship) -> dict:
    """Train on some erasures, rank the vocabulary for held-out ones; single similarities as baselines."""
    cfg = PredictorConfig()

    def evaluate(train, test) -> dict[str, list[float]]:
        model = train_predictor(feats, {c: spectra[c] for c in train}, cfg, generator=torch.Generator().manual_seed(0))
        r: dict[str, list[float]] = {"predictor": [], **{k: [] for k in BASELINES}}
        for c in test:
            i, j, y = impact_targets({c: spectra[c]}, words)
            with torch.no_grad():
                r["predictor"].append(rank_spearman(model.score(feats, i, j), y))
            x = pair_features(feats, i, j)
            for k, col in BASELINES.items():
                r[k].append(rank_spearman(x[:, FEATURES.index(col)], y))
        return r

    held = evaluate([c for c in erased if c not in HELD_OUT], HELD_OUT)
    folds: dict[str, list[float]] = {}
    order = np.random.default_rng(0).permutation(erased).tolist()
    for k in range(FOLDS):
        test = order[k::FOLDS]
        for name, v in evaluate([c for c in erased if c not in test], test).items():
            folds.setdefault(name, []).extend(v)
    shipped = train_shipped(feats, spectra, fp)
    if ship:
        shipped.save(SHIP)
    weights = dict(zip(cfg.features, shipped.net.weight.detach()[0].tolist()))
    return {"config": {**cfg.__dict__}, "held_out": list(HELD_OUT), "weights_all_22": weights,
            "held_out_spearman": {k: {"per_concept": dict(zip(HELD_OUT, v)), **ms(v)} for k, v in held.items()},
            f"{FOLDS}_fold_spearman": {k: ms(v) for k, v in folds.items()}}  # fmt: skip


def preserved_choice(pipe, oracle, spectra, words, runs) -> dict:
    """c. Which preserved concept keeps the rest best: the most sensitive one, a mid-spectrum one, or ""
    (the talk's "road" > "lexus" > " "), as ESR-1 on the erased object and PSR-1 on the other objects.
    Two set-ups: equation (1) as written (the chosen concept is both the target c_n and preserved),
    and a neutral target c_n = "" with the chosen concept preserved (c_p)."""
    s = Sampling(n=2)
    out: dict = {"eq1": {}, "neutral_target": {}}
    for c in CHOICE:
        order = [w for w, _ in spectra[c].order() if w != c and not w.startswith("'") and oracle_label(w) != oracle_label(c)]
        picks = {"most sensitive": order[0], "mid-spectrum": order[len(order) // 2], "empty": "''"}
        for setup, prefix in (("eq1", "preserve"), ("neutral_target", "keep")):
            out[setup][c] = {}
            for kind, w in picks.items():
                f = runs / f"{prefix}_{c}_{kind.replace(' ', '_')}.json"
                if not f.exists():
                    p = concept_prompt(w)
                    extra = {"c_n": p} if setup == "eq1" else {"c_n": "", "c_p": p}
                    edit = erase(pipe, [c], make_config("neutral", **(ERASE | extra)), torch.Generator().manual_seed(0))
                    with edit.applied(pipe):
                        rates = class_rates(judge_objects(pipe, oracle, OBJECTS, s))
                    psr = float(np.mean([rates[o]["top1"] for o in OBJECTS if o != c]))
                    f.write_text(json.dumps({"c_n": p, "ESR-1": 1 - rates[c]["top1"], "PSR-1": psr}))
                out[setup][c][kind] = json.loads(f.read_text())
    for setup in ("eq1", "neutral_target"):
        out[f"summary_{setup}"] = {
            k: {m: ms([out[setup][c][k][m] for c in CHOICE]) for m in ("PSR-1", "ESR-1")}
            for k in ("most sensitive", "mid-spectrum", "empty")
        }
    return out


def plots(r: dict, spectra, out: Path, pipe, oracle, runs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for c in ("circle", "red", "checkered"):
        plot_spectrum(spectra[c], out.with_name(f"{out.name}_spectrum_{c}.png"))
    # grid of the most and least affected concepts of erasing circle, base vs edited
    order = [w for w, _ in spectra["circle"].order()]
    pick = order[:3] + order[-3:]
    e = empirical_impact(pipe, Edit.load(runs / "edits" / "circle"), pick, judge=oracle, labels=JUDGE_LABELS, n=6,
                         keep_images=True)  # fmt: skip
    extremes_grid(spectra["circle"], e, out.with_name(f"{out.name}_extremes_circle.png"))

    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    a = r["a_family"]["impact_ratio"]["per_object"]
    ax[0, 0].bar(list(a), list(a.values()), color=[f"C{list(FAMILIES).index(FAMILY_OF[o])}" for o in a])
    ax[0, 0].axhline(1, color="k", lw=0.8, ls="--")
    ax[0, 0].set_title("a. own-family / other-family mean impact (bars coloured by family)")
    ax[0, 0].tick_params(axis="x", rotation=45)
    b = r["b_neutral_percentile"]
    ax[0, 1].boxplot([list(v["per_erasure"].values()) for v in b.values()], tick_labels=list(b))
    ax[0, 1].set_ylabel("percentile (0 = most affected)")
    ax[0, 1].set_title("b. where the neutral prompts fall, over 22 erasures")
    for k, (setup, label) in enumerate((("eq1", "eq. 1: target = preserved"), ("neutral_target", 'target "", preserve c_p'))):
        cs = r["c_preserved_choice"][f"summary_{setup}"]
        ax[1, 0].bar(np.arange(3) + 0.4 * k, [100 * v["PSR-1"]["mean"] for v in cs.values()], width=0.38, label=label,
                     yerr=[100 * v["PSR-1"]["std"] for v in cs.values()])  # fmt: skip
    ax[1, 0].set_xticks(np.arange(3) + 0.2, list(cs))
    ax[1, 0].set_ylim(80, 100)
    ax[1, 0].legend(loc="lower right")
    ax[1, 0].set_ylabel("PSR-1 on the other objects (%)")
    ax[1, 0].set_title("c. which preserved concept keeps the rest best")
    f = r["f_predictor"]["held_out_spearman"]
    names = ["text pooled\n(held out)", "text L2\n(held out)", "ε cosine\n(held out)", "xattn values\n(held out)",
             "predictor\n(held out)"]  # fmt: skip
    keys = [*BASELINES, "predictor"]
    vals = [f[k]["mean"] for k in keys]
    errs = [f[k]["std"] for k in keys]
    ax[1, 1].bar(names, vals, yerr=errs, color=["C0", "C0", "C2", "C2", "C4"])
    ax[1, 1].set_ylabel("Spearman with measured impact")
    ax[1, 1].set_title("d/f. what predicts impact")
    fig.tight_layout()
    fig.savefig(out.with_name(f"{out.name}_abcd.png"), dpi=110)
    plt.close(fig)


def markdown(r: dict) -> str:
    a, b, d, e = r["a_family"], r["b_neutral_percentile"], r["d_similarity_spearman"], r["e_empirical"]
    f, s, c = r["f_predictor"], r["s_speed"], r["c_preserved_choice"]
    pm = lambda v, k=1: f"{k * v['mean']:.2f} ± {k * v['std']:.2f}"  # noqa: E731
    lines = [
        "# Impact of an erasure on other concepts (mini world)", "",
        f"22 single-concept ESD-x erasures ({json.dumps(r['erase_settings'])}, {r['erase_seconds']['mean']:.0f} s each), "
        f"each scored over {len(r['vocabulary'])} concepts with {r['draws']} fixed (z_t, t) draws. "
        "Impact = −score = mean ‖ε′(c, z_t) − ε(c, z_t)‖² (higher = more affected). Mean ± std over erasures. "
        f"Model: `mini`, fingerprint `{r.get('model_fingerprint', '?')}`.", "",
        "| observation | result |", "|---|---|",
        f"| a. own-family / other-family mean impact (10 object erasures) | {pm(a['impact_ratio'])} |",
        f"| a. text cosine, own family minus other families: end-of-text token | {a['text_cosine_gap']['pooled']['mean']:.4f} |",
        f"| a. text cosine, own family minus other families: full sequence | "
        f"{a['text_cosine_gap']['full']['mean']:.3f} ± {a['text_cosine_gap']['full']['std']:.3f} |",
        f"| a. erased object's prompts drawn as another object of its family (chance {a['same_family_by_chance']:.2f}) | "
        f"{pm(a['erased_became_same_family'])} |",
        *[f"| b. percentile of {n} (0 = most affected; 22 erasures) | {v['mean']:.0f} ± {v['std']:.0f} |" for n, v in b.items()],
        *[f"| c. erase an object, {name}, preserving the {k} concept: PSR-1 others / ESR-1 | "
          f"{pm(v['PSR-1'], 100)} % / {pm(v['ESR-1'], 100)} % |"
          for setup, name in (("eq1", "eq. 1 (target = preserved)"), ("neutral_target", 'target ""'))
          for k, v in c[f"summary_{setup}"].items()],
        f"| d. Spearman(text similarity, impact), pooled cosine | {pm(d['pooled_cosine'])} |",
        f"| d. Spearman(text similarity, impact), full-embedding L2 | {pm(d['full_l2'])} |",
        f"| d'. Spearman(base-model ε cosine, impact) | {pm(d['eps_cosine'])} |",
        f"| d'. Spearman(cross-attention value cosine, impact) | {pm(d['xattn_value_cosine'])} |",
        f"| e. Spearman(spectrum impact, image distance), {len(e['per_erasure'])} erasures | {pm(e['spearman_distance'])} |",
        f"| e. Spearman(spectrum impact, oracle accuracy drop) | {pm(e['spearman_accuracy_drop'])} |",
        f"| f. predictor Spearman, held-out erasures ({', '.join(f['held_out'])}) | "
        + ", ".join(f"{k} {pm(v)}" for k, v in f["held_out_spearman"].items()) + " |",
        f"| f. predictor Spearman, {FOLDS}-fold over all 22 erasures | "
        + ", ".join(f"{k} {pm(v)}" for k, v in f[f"{FOLDS}_fold_spearman"].items()) + " |",
        f"| s. one spectrum with a warm cache / plain per-concept loop | {s['spectrum_warm_cache_s']:.1f} s / "
        f"{s['plain_loop_s']:.1f} s ({s['speedup']:.1f}x; max |Δscore| {s['max_abs_difference']:.1e}) |",
        "",
        "Per-object family ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in a["impact_ratio"]["per_object"].items()), "",
        "What erased objects' prompts draw instead (oracle top-1 over 16 images): "
        + "; ".join(f"{o}: " + ", ".join(f"{b} {n}" for b, n in sorted(v.items(), key=lambda x: -x[1])[:3])
                    for o, v in a["erased_became"].items()), "",
        "Preserved concepts chosen in c: " + "; ".join(f"{o}: " + ", ".join(f"{k} {v['c_n']!r}" for k, v in kv.items())
                                                         for o, kv in c["eq1"].items()), "",
        "![a-d](impact_abcd.png)", "", "![spectrum of erasing circle](impact_spectrum_circle.png)", "",
        "![most and least affected by erasing circle](impact_extremes_circle.png)", "",
    ]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
