"""Interference of composed edits: what each erasure does alone, and what the composition does.

:func:`interference_report` composes separately made edits (:meth:`unsee.edits.Edit.compose`) and
measures, with any :class:`unsee.judges.Judge`:

- each erased concept's ESR-1 (the judge's top-1 on prompts that ask for it is not the concept) under
  the edit that erased it alone and under the composition;
- PSR-1 (the judge's top-1 is what the prompt asks for) on the prompts that ask for no erased concept,
  under the composition, under each edit alone and under the base model;
- with ``base_esr``, each erased concept's ESR-1 under the base model too: how often the base model fails to draw
  it at all, which a low ESR alone can be read against. It is the base model's images of every erased prompt,
  a sixth of the 10-edit report's work when nothing is cached, so it is asked for, not drawn by default;
- with a vocabulary, the sensitivity spectrum of the composition against the sum of the edits' single
  spectra. A spectrum score is minus the squared change of the model's output on a concept; were the
  edits' changes independent of each other, the composition's score would be the sum of theirs, so
  ``composed - sum`` below 0 marks a concept the edits change more together than apart.

A prompt's images come from the same seeds under every model, so each comparison is paired. A world
plugs in through the judge and ``prompts`` (each prompt with the judge's names of the concepts it asks
for); ``labels`` maps the edits' concept names to the judge's (a synonym to its class).
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from scipy.stats import spearmanr

from unsee.concepts.vocab import Vocabulary
from unsee.edits import Edit
from unsee.judges import Judge, group_of, knows
from unsee.metrics.judged import PromptResult, cached_prompt_images, judge_images, judge_prompts

Models = dict[str, dict[str, PromptResult]]
"""Model (``"base"``, ``"composed"`` or a part's digest) -> prompt -> the judge's reads of its images."""


@dataclass(frozen=True)
class Interference:
    """The report of :func:`interference_report`; ``images`` (with ``keep_images``) feed :meth:`grid`."""

    parts: list[dict]
    """Each composed edit's method, concepts, seed and digest, in the composition's (digest) order."""
    composed: dict
    """The composition's digest, concepts and the tensors several parts change (tensor -> digests)."""
    esr: dict[str, dict]
    """Erased concept -> ESR-1 under ``base`` (None without ``base_esr``), its edit ``alone`` and ``composed``, with
    the edit's digest."""
    psr: dict
    """PSR-1 of ``base``, ``composed`` and each part ``alone`` (digest -> PSR-1), and ``per_concept`` rates."""
    spectrum: dict | None
    """Per vocabulary word the composition's score, the sum of the parts' and their difference, with correlations."""
    settings: dict
    seconds: float
    reads: Models = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"parts": self.parts, "composed": self.composed, "esr": self.esr, "psr": self.psr,
                "spectrum": self.spectrum, "settings": self.settings, "seconds": self.seconds}  # fmt: skip

    def markdown(self, images: Sequence[str] = ()) -> str:
        """The report as a page: the ESR and PSR tables, the spectrum's summary, then ``images`` (paths relative to
        the page) shown in order."""
        name = {p["digest"]: f"{p['method']} {'+'.join(p['concepts'])} ({p['digest'][:8]})" for p in self.parts}
        lines = [f"# Composition of {len(self.parts)} edits: {', '.join(self.composed['concepts'])}", "",
                 f"Composed edit `{self.composed['digest']}` (deltas summed; {len(self.composed['shared'])} tensors "
                 f"changed by several edits). Images per prompt: {self.settings['n']}, the same seeds under every model; "
                 f"the judge's top-1. Written in {self.seconds:.0f} s.", ""]  # fmt: skip
        with_base = all(e["base"] is not None for e in self.esr.values())
        head = ["erased concept", "its edit"] + ["ESR-1 base"] * with_base + ["ESR-1 alone", "ESR-1 composed"]
        lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for c, e in self.esr.items():
            cells = [c, name[e["edit"]]] + ([f"{100 * e['base']:.1f}"] if with_base else [])
            lines.append("| " + " | ".join(cells + [f"{100 * e['alone']:.1f}", f"{100 * e['composed']:.1f}"]) + " |")
        if not with_base:
            lines += ["", "The base model's ESR-1 was not measured (`base_esr=True`, `unsee compose-report --base-esr`)."]
        lines += ["", f"PSR-1 over {len(self.psr['prompts'])} prompts that ask for no erased concept: base "
                  f"{100 * self.psr['base']:.1f}, composed {100 * self.psr['composed']:.1f}.", "",
                  "| edit alone | PSR-1 | composed minus alone |", "|---|---|---|"]  # fmt: skip
        for d, v in self.psr["alone"].items():
            lines.append(f"| {name[d]} | {100 * v:.1f} | {100 * (self.psr['composed'] - v):+.1f} |")
        if self.spectrum is not None:
            worst = ", ".join(f"{w} ({v:+.4f})" for w, v in self.spectrum["most_interfering"][:6])
            lines += ["", f"Spectrum ({len(self.spectrum['scores'])} words, draws {self.spectrum['draws']}): the "
                      f"composition's scores against the sum of the single edits' scores, Pearson "
                      f"{self.spectrum['pearson']:.3f}, Spearman {self.spectrum['spearman']:.3f}; changed more together "
                      f"than apart (composed minus sum): {worst}."]  # fmt: skip
        lines += [""] + [f"![{Path(i).stem}]({i})" for i in images]
        return "\n".join(lines) + "\n"

    def grid(self, path: str | Path, *, n_preserved: int = 4, cell: int = 64) -> Path:
        """One row per prompt, the same seeds across a row: the first prompt of each erased concept (base, its edit
        alone, composed) and the first ``n_preserved`` preserved prompts (base, blank, composed). A cell not
        measured (the erased prompts' base without ``base_esr``) is blank."""
        from unsee.images import image_grid

        if not self.reads or next(iter(self.reads["composed"].values())).images is None:
            raise ValueError("the report kept no images; run interference_report with `keep_images=True`")
        cells, labels = [], []
        rows = [(e["prompts"][0], e["edit"]) for e in self.esr.values()] + [(p, None) for p in self.psr["prompts"][:n_preserved]]
        for p, edit in rows:
            both = self.reads["composed"][p].images
            base = self.reads["base"][p].images if p in self.reads["base"] else torch.ones_like(both)
            alone = self.reads[edit][p].images if edit is not None else torch.ones_like(both)
            cells += [base, alone, both]
            labels.append(f'"{p}"' + (" (kept)" if edit is None else ""))
        title = (f"{len(self.parts)} composed edits ({', '.join(self.composed['concepts'])}); columns: base | the "
                 "concept's edit alone | composed, same seeds")  # fmt: skip
        if any(p not in self.reads["base"] for p, _ in rows):
            title += "; blank: not drawn"
        grid = image_grid(torch.cat(cells), cols=3 * self.settings["n"], cell=cell, row_labels=labels, title=title)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
        return path


class Replicas:
    """``workers`` copies of a pipeline (the first is the pipeline itself) that threads take one at a time, the CPU
    threads split between them while open. One worker, or several processes under accelerate: calls run in order
    on the pipeline itself (collective operations must run in the same order on every process)."""

    def __init__(self, pipe: StableDiffusionPipeline, workers: int):
        from unsee.distributed import processes

        self.pipe, self.workers = pipe, 1 if processes() > 1 else workers
        self.threads = torch.get_num_threads()

    def __enter__(self) -> Replicas:
        if self.workers > 1:
            self.free: queue.SimpleQueue = queue.SimpleQueue()
            for q in [self.pipe] + [copy.deepcopy(self.pipe) for _ in range(self.workers - 1)]:
                self.free.put(q)
            torch.set_num_threads(max(1, self.threads // self.workers))
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.threads)

    def map(self, fn, items: Sequence) -> list:
        """``[fn(pipeline, item) for item in items]``, in order; each call has a pipeline to itself. The calls start
        in the items' order (a call may wait on an earlier one's result, never on a later one's)."""
        if self.workers == 1:
            return [fn(self.pipe, it) for it in items]

        def run(it):
            q = self.free.get()
            try:
                return fn(q, it)
            finally:
                self.free.put(q)

        with ThreadPoolExecutor(self.workers) as ex:
            return list(ex.map(run, items))


class Once:
    """A value computed by the first call, from any thread; later calls wait for it and share it."""

    def __init__(self, fn):
        self.fn, self.lock, self.done, self.value = fn, threading.Lock(), False, None

    def __call__(self, *args):
        with self.lock:
            if not self.done:
                self.value, self.done = self.fn(*args), True
            return self.value


def rate(result: PromptResult, judge: Judge, label: str) -> float:
    """Share of a prompt's images whose top-1 in the label's group is ``label``."""
    return result.rate(group_of(judge, label), label, 1)


@torch.no_grad()
def interference_report(
    pipe: StableDiffusionPipeline,
    edits: Sequence[Edit],
    judge: Judge,
    prompts: Mapping[str, Sequence[str]],
    *,
    labels: Mapping[str, str] | None = None,
    vocab: Vocabulary | None = None,
    draws=None,
    n: int = 2,
    seed: int = 0,
    steps: int | None = None,
    guidance_scale: float | None = None,
    cache_dir: str | Path | None = None,
    keep_images: bool = False,
    force: bool = False,
    progress: bool = False,
    workers: int = 1,
    batch_size: int = 12,
    base_esr: bool = False,
) -> Interference:
    """Compose ``edits`` on ``pipe`` (their base model) and measure how they interfere (see the module).

    ``prompts``: prompt -> the judge's names of the concepts it asks for; every erased concept needs at least
    one prompt, and the prompts that ask for no erased concept are the preserved set. ``vocab`` (and
    ``draws``, default :func:`~unsee.impact.spectrum.make_draws` with 4 draws) adds the spectra; ``cache_dir``
    keeps the base model's spectrum outputs and images (per prompt, see
    :func:`~unsee.metrics.judged.cached_prompt_images`), which every later report on this model reuses. ``n``
    images per prompt, prompt i seeded ``seed + i`` under every model. ``pipe`` is left as it was.

    ``workers`` > 1 measures that many models at once (the base, the composition, each edit alone, their spectra),
    each on its own copy of ``pipe`` in a thread, the CPU threads shared between them: on a CPU, where one small
    model's operations do not keep every core busy, the report is written sooner. The images can then differ from
    one worker's in the last bits (a CPU's sums depend on how many threads share them). One process under
    ``accelerate launch`` uses one worker.

    ``base_esr``: also draw the base model's images of the erased prompts, for each concept's ESR-1 under the base
    model (by default the base model draws only the preserved prompts, for its PSR-1).

    ``batch_size``: images per UNet call (twice as many rows with guidance; the spectra take ``2 * batch_size``
    (word, draw) pairs a call). Small calls keep a small model's activations in the CPU's caches: on 2 cores, two
    processes at once, the mini model ran 9% faster per row at 24 rows a call than at 128 and 16% than at 192, the
    sizes a report's largest reads and spectra took before (benchmarks/results/unet_batch.md).
    The images can differ in the last bits from another ``batch_size``'s.
    """
    if workers < 1:
        raise ValueError(f"`workers` must be at least 1 (got {workers})")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1 (got {batch_size}): the images per UNet call")
    t0 = time.perf_counter()
    composed = Edit.compose(edits, pipe, force=force)
    parts = composed.config["parts"]
    by_digest = {e.digest: e for e in edits}
    labels = dict(labels or {})
    asked = {p: tuple(cs) for p, cs in prompts.items()}
    for c in {c for cs in asked.values() for c in cs}:
        group_of(judge, c)  # one line naming what the judge knows
    erased: dict[str, str] = {}  # the judge's name of an erased concept -> the digest of the edit that erased it
    for part in parts:
        for c in part["concepts"]:
            label = labels.get(c, c)
            if not knows(judge, label):
                raise ValueError(f"the judge does not know the erased concept {c!r}; map it to one it knows in `labels`")
            erased.setdefault(label, part["digest"])
    own = {c: [p for p, cs in asked.items() if c in cs] for c in erased}
    missing = [c for c, ps in own.items() if not ps]
    if missing:
        raise ValueError(f"no prompt asks for the erased concept {missing[0]!r}; add prompts for it to `prompts`")
    kept = [p for p, cs in asked.items() if cs and not set(cs) & set(erased)]
    if not kept:
        raise ValueError("every prompt asks for an erased concept, so nothing measures preservation; add prompts to "
                         "`prompts` that ask only for concepts the edits keep")  # fmt: skip
    seeds = {p: seed + i for i, p in enumerate(asked)}
    kw = dict(n=n, steps=steps, guidance_scale=guidance_scale, k=1, keep_images=keep_images, progress=progress,
              batch_size=batch_size)  # fmt: skip

    def read(pipe: StableDiffusionPipeline, edit: Edit | None, ps: Sequence[str]) -> dict[str, PromptResult]:
        if edit is None and cache_dir is not None:  # the base model's images serve every report on this model
            ims = cached_prompt_images(pipe, ps, cache_dir, seeds=[seeds[p] for p in ps], n=n, steps=steps,
                                       guidance_scale=guidance_scale, batch_size=batch_size, progress=progress)  # fmt: skip
            res = judge_images(judge, ps, ims, k=1, keep_images=keep_images)
        elif edit is None:
            res = judge_prompts(pipe, judge, ps, seeds=[seeds[p] for p in ps], **kw)
        else:  # Edit.compose has checked that pipe holds the edits' base model: no need to hash it again per read
            with edit.applied(pipe, force=True):
                res = judge_prompts(pipe, judge, ps, seeds=[seeds[p] for p in ps], **kw)
        return dict(zip(ps, res))

    every = list(asked)
    jobs: dict[str, tuple[Edit | None, list[str]]] = {"base": (None, every if base_esr else kept), "composed": (composed, every)}
    for part in parts:
        mine = [p for p in every if p in kept or set(asked[p]) & {c for c, d in erased.items() if d == part["digest"]}]
        jobs[part["digest"]] = (by_digest[part["digest"]], mine)
    spec_tasks = []
    if vocab is not None:
        from unsee.impact.spectrum import make_draws

        draws = make_draws(pipe, 4, seed=seed) if draws is None else draws
        # force: Edit.compose has checked the model once
        spec_tasks = spectrum_tasks([by_digest[p["digest"]] for p in parts], composed, vocab, draws, cache_dir=cache_dir,
                                    force=True, batch_size=2 * batch_size)  # fmt: skip
    # One queue of work for the workers, so that none waits while another has some left: the base model's spectrum
    # outputs first (every spectrum needs them), the reads largest first, the spectra (small) last.
    order = sorted(jobs, key=lambda k: -len(jobs[k][1]))
    tasks = spec_tasks[:1] + [lambda q, k=k: read(q, *jobs[k]) for k in order] + spec_tasks[1:]
    with Replicas(pipe, workers) as pool:
        done = pool.map(lambda q, task: task(q), tasks)
    head = len(spec_tasks[:1])
    got = dict(zip(order, done[head : head + len(order)]))
    reads: Models = {k: got[k] for k in jobs}
    scores = done[head + len(order) :]  # each part's spectrum, then the composition's

    def esr(model: str, c: str) -> float:
        return float(np.mean([1 - rate(reads[model][p], judge, c) for p in own[c]]))

    def psr(model: str) -> float:
        return float(np.mean([rate(reads[model][p], judge, c) for p in kept for c in asked[p]]))

    esr_table = {c: {"edit": d, "prompts": own[c], "base": esr("base", c) if base_esr else None, "alone": esr(d, c),
                     "composed": esr("composed", c)} for c, d in erased.items()}  # fmt: skip
    preserved = list(dict.fromkeys(c for p in kept for c in asked[p]))
    per_concept = {c: {m: float(np.mean([rate(reads[m][p], judge, c) for p in kept if c in asked[p]])) for m in reads}
                   for c in preserved}  # fmt: skip
    psr_table = {"prompts": kept, "base": psr("base"), "composed": psr("composed"),
                 "alone": {part["digest"]: psr(part["digest"]) for part in parts}, "per_concept": per_concept}  # fmt: skip
    spec = None if vocab is None else compare_spectra(vocab, draws, scores[:-1], scores[-1])
    return Interference(
        parts=parts,
        composed={
            "digest": composed.digest,
            "concepts": list(composed.concepts),
            "shared": composed.info["shared"],
            "base_fingerprint": composed.base_fingerprint,
        },
        esr=esr_table,
        psr=psr_table,
        spectrum=spec,
        settings={
            "n": n,
            "seed": seed,
            "steps": steps,
            "guidance_scale": guidance_scale,
            "prompts": len(asked),
            "base_esr": base_esr,
        },
        seconds=time.perf_counter() - t0,
        reads=reads,
    )


def spectra(pipe: StableDiffusionPipeline, parts: Sequence[Edit], composed: Edit, vocab: Vocabulary, draws=None, *,
            seed: int = 0, cache_dir: str | Path | None = None, force: bool = False, top: int = 8,
            workers: int = 1, batch_size: int = 24) -> dict:  # fmt: skip
    """The composition's spectrum against the sum of the parts' (see the module), with Pearson and Spearman
    correlations over the vocabulary and the ``top`` words the parts change most more together than apart.
    ``batch_size``: (word, draw) pairs per UNet call."""
    from unsee.impact.spectrum import make_draws

    draws = make_draws(pipe, 4, seed=seed) if draws is None else draws
    with Replicas(pipe, workers) as pool:
        _, *single, both = pool.map(lambda q, task: task(q), spectrum_tasks(parts, composed, vocab, draws, cache_dir=cache_dir,
                                                                           force=force, batch_size=batch_size))  # fmt: skip
    return compare_spectra(vocab, draws, single, both, top)


def spectrum_tasks(parts: Sequence[Edit], composed: Edit, vocab: Vocabulary, draws, *, cache_dir: str | Path | None,
                   force: bool, batch_size: int) -> list:  # fmt: skip
    """The work of :func:`spectra` as tasks for :meth:`Replicas.map` (each ``task(pipeline)``): the base model's
    outputs first, then each part's scores and the composition's, which wait on the first and share it."""
    from unsee.impact.spectrum import base_outputs, spectrum

    base = Once(lambda q: base_outputs(q, vocab, draws, cache_dir, batch_size))
    return [base] + [lambda q, e=e: spectrum(q, e, vocab, draws, base=base(q), force=force, batch_size=batch_size).scores
                     for e in [*parts, composed]]  # fmt: skip


def compare_spectra(vocab: Vocabulary, draws, single: Sequence[torch.Tensor], both: torch.Tensor, top: int = 8) -> dict:
    """The composition's scores ``both`` against the sum of the parts' ``single`` (see :func:`spectra`)."""
    total = torch.stack(list(single)).sum(0)
    diff = both - total
    order = diff.argsort().tolist()
    scores = {w: {"composed": float(b), "sum": float(s), "singles": [float(x[i]) for x in single]}
              for i, (w, b, s) in enumerate(zip(vocab.words, both, total))}  # fmt: skip
    return {
        "draws": draws.key,
        "pearson": float(np.corrcoef(both.numpy(), total.numpy())[0, 1]),
        "spearman": float(spearmanr(both.numpy(), total.numpy()).statistic),
        "most_interfering": [(vocab.words[i], float(diff[i])) for i in order[:top]],
        "scores": scores,
    }


def plot_spectra(report: Interference, path: str | Path) -> Path:
    """The composition's spectrum score against the sum of the parts' per word, the most interfering labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if report.spectrum is None:
        raise ValueError("the report has no spectra; pass `vocab` to interference_report")
    s = report.spectrum["scores"]
    x = [v["sum"] for v in s.values()]
    y = [v["composed"] for v in s.values()]
    fig, ax = plt.subplots(figsize=(6, 5))
    lo, hi = min(x + y), max(x + y)
    ax.plot([lo, hi], [lo, hi], color="#bbb", lw=1, label="composed = sum of singles")
    ax.scatter(x, y, s=12, color="#345")
    for w, _ in report.spectrum["most_interfering"][:6]:
        ax.annotate(w, (s[w]["sum"], s[w]["composed"]), textcoords="offset points", xytext=(4, -8), fontsize=8)
    ax.set_xlabel("sum of the single edits' scores")
    ax.set_ylabel("the composition's score")
    ax.set_title(f"spectrum of {len(report.parts)} composed edits (Pearson {report.spectrum['pearson']:.3f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
