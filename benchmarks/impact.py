"""The talk's impact observations, measured on the mini world (issue: impact analysis).

For each erased concept (10 objects, 8 colours, 4 styles; ESD-x, one concept at a time) the
sensitivity spectrum over the vocabulary of concept prompts, then:
  a. does erasing an object affect its own family more than other families (ratio of mean impact)?
  b. where do the neutral prompts ("", "a picture", "an image", "a photo") fall (percentile)?
  d. how well does text-embedding similarity predict impact (Spearman; pooled and full embeddings)?
  e. the spectrum against the empirical impact (oracle accuracy drop over the 10 objects, Spearman);
  f. the learned impact predictor f_phi(c_i, c_j) on held-out erased concepts vs the text baseline;
  s. speed: one spectrum with a warm cache, and against a plain per-concept loop.
Edits are saved as they finish, so an interrupted run continues. Writes benchmarks/results/impact.{json,md,png}.
Run: `.venv/bin/python benchmarks/impact.py`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from unsee.concepts.vocab import Vocabulary, build_vocabulary, model_words
from unsee.edits import Edit
from unsee.impact.spectrum import make_draws, plot_spectrum, spectrum, spectrum_plain_loop
from unsee.methods import erase, make_config
from unsee.metrics.protocols import Sampling, class_rates, judge_objects
from unsee.models import load_pipeline
from unsee.world import BACKGROUNDS, COLOUR_NAMES, FAMILIES, FAMILY_OF, NEUTRAL_PROMPTS, OBJECTS
from unsee.world.captions import with_article
from unsee.world.oracle import load_oracle

RESULTS = Path(__file__).parent / "results"
ERASE = dict(params="xattn", iterations=80, lr=3e-4, batch_size=4, template="a {}")
HELD_OUT = ("ring", "hexagon", "cross", "teal", "pink", "dotted")


def concept_prompt(w: str) -> str:
    return w if w in NEUTRAL_PROMPTS else with_article(w)


def vocabulary(pipe) -> tuple[Vocabulary, list[str]]:
    """Concept names (words, and the neutral prompts quoted) with the embeddings of their prompts."""
    words = [w for w in model_words(pipe) if w != "an"]
    prompts = [concept_prompt(w) for w in words] + list(NEUTRAL_PROMPTS)
    v = build_vocabulary(pipe, prompts)
    return Vocabulary(tuple(words) + tuple(repr(p) for p in NEUTRAL_PROMPTS), v.embeddings, "a {}"), prompts


def predictor_features(emb_full: torch.Tensor, pooled: torch.Tensor, i: int, j: int) -> torch.Tensor:
    a, b = pooled[i], pooled[j]
    return torch.cat([a, b, a * b, (a - b).abs(), torch.stack([torch.cosine_similarity(a, b, dim=0),
                      (emb_full[i] - emb_full[j]).norm()])])  # fmt: skip


def train_predictor(x: torch.Tensor, y: torch.Tensor, seed: int = 0, steps: int = 1500) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(net(x).squeeze(-1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(RESULTS / "impact"))
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=ERASE["iterations"], help="ESD iterations per erasure")
    ap.add_argument("--concepts", nargs="*", default=None, help="erase only these (default: objects, colours, styles)")
    args = ap.parse_args()
    ERASE["iterations"] = args.iterations
    torch.set_num_threads(2)
    out = Path(args.out)
    runs = out.with_name(out.name + "_runs")
    runs.mkdir(parents=True, exist_ok=True)
    pipe, oracle = load_pipeline("mini"), load_oracle()
    vocab, prompts = vocabulary(pipe)
    draws = make_draws(pipe, args.draws)
    cache = runs / "cache"
    erased = args.concepts or list(OBJECTS) + list(COLOUR_NAMES) + list(BACKGROUNDS)
    spectra, seconds = {}, {}
    for c in erased:
        folder = runs / "edits" / c
        if not (folder / "edit.json").exists():
            erase(pipe, [c], make_config("esd", **ERASE), torch.Generator().manual_seed(0)).save(folder)
        edit = Edit.load(folder)
        seconds[c] = edit.info["seconds"]
        t0 = time.perf_counter()
        spectra[c] = spectrum(pipe, edit, vocab, draws, cache_dir=cache)
        print(c, f"erase {seconds[c]:.0f}s spectrum {time.perf_counter() - t0:.1f}s", flush=True)
    impact = {c: -s.scores for c, s in spectra.items()}  # higher = more affected
    words = list(vocab.words)
    report: dict = {"erase_settings": ERASE, "draws": args.draws, "vocabulary": words}

    # a. family
    ratios, erased_objects = [], [o for o in OBJECTS if o in erased]
    for o in erased_objects:
        same = [impact[o][words.index(x)] for x in FAMILIES[FAMILY_OF[o]] if x != o]
        other = [impact[o][words.index(x)] for x in OBJECTS if FAMILY_OF[x] != FAMILY_OF[o]]
        ratios.append(float(np.mean(same) / np.mean(other)))
    report["a_family_ratio"] = {"per_object": dict(zip(erased_objects, ratios)), "mean": float(np.mean(ratios)),
                                "std": float(np.std(ratios))}  # fmt: skip
    # b. neutral percentiles (0 = most affected)
    neutral_names = [repr(p) for p in NEUTRAL_PROMPTS]
    pct = {n: [spectra[c].percentile(n) for c in erased] for n in neutral_names}
    report["b_neutral_percentile"] = {n: {"mean": float(np.mean(v)), "std": float(np.std(v))} for n, v in pct.items()}
    # d. text similarity vs impact
    pooled = torch.stack([vocab.embeddings[i][-1] for i in range(len(words))])  # last padded token sees all
    full = vocab.embeddings.flatten(1)
    rho_pooled, rho_full = [], []
    for c in erased:
        i = words.index(c)
        others = [j for j in range(len(words)) if j != i]
        sim_p = torch.cosine_similarity(pooled[others], pooled[i][None], dim=-1)
        sim_f = -(full[others] - full[i]).norm(dim=-1)
        rho_pooled.append(spearmanr(sim_p, impact[c][others]).statistic)
        rho_full.append(spearmanr(sim_f, impact[c][others]).statistic)
    report["d_text_similarity_spearman"] = {
        "pooled_cosine": {"mean": float(np.nanmean(rho_pooled)), "std": float(np.nanstd(rho_pooled))},
        "full_l2": {"mean": float(np.nanmean(rho_full)), "std": float(np.nanstd(rho_full))},
    }
    # e. empirical impact: oracle accuracy drop over the objects, for four object erasures
    s = Sampling(n=2)
    base_file = runs / "base_rates.json"
    if not base_file.exists():
        base_file.write_text(json.dumps(class_rates(judge_objects(pipe, oracle, OBJECTS, s))))
    base = json.loads(base_file.read_text())
    emp = {}
    for c in ("circle", "square", "arrow", "star"):
        f = runs / f"empirical_{c}.json"
        if not f.exists():
            with Edit.load(runs / "edits" / c).applied(pipe):
                f.write_text(json.dumps(class_rates(judge_objects(pipe, oracle, OBJECTS, s))))
        rates = json.loads(f.read_text())
        drop = [base[o]["top1"] - rates[o]["top1"] for o in OBJECTS if o != c]
        imp = [float(impact[c][words.index(o)]) for o in OBJECTS if o != c]
        emp[c] = {"accuracy_drop": dict(zip([o for o in OBJECTS if o != c], drop)),
                  "spearman_spectrum_vs_drop": float(spearmanr(imp, drop).statistic)}  # fmt: skip
    report["e_empirical"] = emp
    # f. the impact predictor, trained on the other erased concepts, tested on HELD_OUT
    train_c = [c for c in erased if c not in HELD_OUT]
    pairs = lambda cs: [(words.index(c), j) for c in cs for j in range(len(words)) if j != words.index(c)]  # noqa: E731
    feats = lambda ps: torch.stack([predictor_features(full, pooled, i, j) for i, j in ps])  # noqa: E731
    target = lambda ps: torch.tensor([float(torch.log(impact[words[i]][j] + 1e-8)) for i, j in ps])  # noqa: E731
    tr = pairs(train_c)
    net = train_predictor(feats(tr), target(tr))
    rho_pred, rho_base = [], []
    for c in HELD_OUT:
        ps = pairs([c])
        with torch.no_grad():
            pred = net(feats(ps)).squeeze(-1)
        truth = target(ps)
        rho_pred.append(spearmanr(pred, truth).statistic)
        i = words.index(c)
        rho_base.append(spearmanr([float(torch.cosine_similarity(pooled[i], pooled[j], dim=0)) for _, j in ps],
                                  truth).statistic)  # fmt: skip
    report["f_predictor"] = {"held_out": list(HELD_OUT), "train_concepts": len(train_c),
                             "spearman_predictor": {"mean": float(np.mean(rho_pred)), "per_concept": rho_pred},
                             "spearman_text_similarity": {"mean": float(np.mean(rho_base)), "per_concept": rho_base}}  # fmt: skip
    # s. speed: a warm-cache spectrum vs a plain per-concept loop (same edit, same run)
    edit = Edit.load(runs / "edits" / "circle")
    t0 = time.perf_counter()
    spectrum(pipe, edit, vocab, draws, cache_dir=cache)
    warm = time.perf_counter() - t0
    sub = list(range(0, len(words), 4))  # the loop on a quarter of the vocabulary, scaled up
    t0 = time.perf_counter()
    spectrum_plain_loop(pipe, edit, [prompts[i] for i in sub], draws)
    loop = (time.perf_counter() - t0) * len(words) / len(sub)
    report["s_speed"] = {"spectrum_warm_cache_s": warm, "plain_loop_s_estimated": loop, "speedup": loop / warm,
                         "vocabulary_size": len(words), "draws": args.draws}  # fmt: skip
    report["c_preserved_choice"] = preserved_choice(pipe, oracle, spectra, words, prompts, runs, base, s)
    plot_spectrum(spectra["circle"], out.with_suffix(".png"), neutral=neutral_names)
    report["markdown"] = markdown(report)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=float))
    out.with_suffix(".md").write_text(report["markdown"])
    print(report["markdown"])


def preserved_choice(pipe, oracle, spectra, words, prompts, runs, base, s) -> dict:
    """c. Erase towards and preserve c_n (equation 1) with c_n the most sensitive concept, a
    mid-spectrum one, or "": PSR-1 on the other objects (the talk's "road" > "lexus" > " ")."""
    out = {}
    for c in ("circle", "square"):
        order = [words.index(w) for w, _ in spectra[c].order()]
        order = [i for i in order if words[i] not in (c, "disk", "plus") and not words[i].startswith("'")]
        picks = {"most sensitive": prompts[order[0]], "mid-spectrum": prompts[order[len(order) // 2]], "empty": ""}
        out[c] = {}
        for kind, c_n in picks.items():
            f = runs / f"preserve_{c}_{kind.replace(' ', '_')}.json"
            if not f.exists():
                cfg = make_config("neutral", **(ERASE | {"c_n": c_n}))
                edit = erase(pipe, [c], cfg, torch.Generator().manual_seed(0))
                with edit.applied(pipe):
                    rates = class_rates(judge_objects(pipe, oracle, OBJECTS, s))
                f.write_text(json.dumps({"c_n": c_n, "ESR-1": 1 - rates[c]["top1"],
                                         "PSR-1": float(np.mean([rates[o]["top1"] for o in OBJECTS if o != c]))}))  # fmt: skip
            out[c][kind] = json.loads(f.read_text())
    return out


def markdown(r: dict) -> str:
    a, b, d = r["a_family_ratio"], r["b_neutral_percentile"], r["d_text_similarity_spearman"]
    f, s = r["f_predictor"], r["s_speed"]
    dp, df = d["pooled_cosine"], d["full_l2"]
    lines = ["# Impact of an erasure on other concepts (mini world)", "",
             f"ESD-x erasures of single concepts ({json.dumps(r['erase_settings'])}); spectra over {len(r['vocabulary'])} "
             f"concept prompts, {r['draws']} fixed (z_t, t) draws. Impact = −score (higher = more affected).", "",
             "| observation | result |", "|---|---|",
             f"| a. own-family / other-family mean impact (10 object erasures) | {a['mean']:.2f} ± {a['std']:.2f} |",
             *[f"| b. percentile of {n} (0 = most affected; every erasure) | {v['mean']:.0f} ± {v['std']:.0f} |"
               for n, v in b.items()],
             f"| d. Spearman(text similarity, impact), pooled cosine | {dp['mean']:.2f} ± {dp['std']:.2f} |",
             f"| d. Spearman(text similarity, impact), full-embedding L2 | {df['mean']:.2f} ± {df['std']:.2f} |",
             *[f"| e. Spearman(spectrum, oracle accuracy drop), erasing {c} | {v['spearman_spectrum_vs_drop']:.2f} |"
               for c, v in r["e_empirical"].items()],
             f"| f. predictor Spearman on held-out erased concepts {', '.join(f['held_out'])} | "
             f"{f['spearman_predictor']['mean']:.2f} (text similarity: {f['spearman_text_similarity']['mean']:.2f}) |",
             f"| s. one spectrum, warm cache | {s['spectrum_warm_cache_s']:.1f} s ({s['speedup']:.0f}x a plain loop) |",
             *[f"| c. erase {c} preserving {k} ({v['c_n']!r}): ESR-1 / PSR-1 others | {100 * v['ESR-1']:.0f}% / "
               f"{100 * v['PSR-1']:.1f}% |" for c, kv in r["c_preserved_choice"].items() for k, v in kv.items()],
             "", "Per-object family ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in a["per_object"].items()), "",
             "![spectrum of erasing circle](impact.png)", ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
