"""Concepts expressed by images: a learned token and its input embeddings (the talk's Idea 3).

A :class:`LearnedConcept` is what textual inversion (equation 8, :mod:`unsee.concepts.inversion`)
returns: one new token, its ``(n_vectors, D)`` input embeddings, the settings that made it and the
fingerprints of the model it was learned on. It saves as ``learned_embeds.safetensors`` (the file
diffusers' ``pipe.load_textual_inversion(folder, token=...)`` loads) plus ``concept.json``, and it
goes wherever unsee takes a concept: prompts (``sample(..., learned=c.tokens)``), erasure methods
(as c_e, or as a token in c_n), attacks.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file

from unsee import __version__

WEIGHTS = "learned_embeds.safetensors"
META = "concept.json"


class ConceptMismatch(ValueError):
    """A learned concept made for another base model."""


def check_new_token(tokenizer, token: str) -> None:
    """Refuse a token the tokenizer already knows (or one that could not stand alone in a prompt)."""
    if not token or token != token.strip() or any(ch.isspace() for ch in token):
        raise ValueError(f"token {token!r} must be one piece of text without spaces, e.g. '<frame>'")
    vocab = tokenizer.get_vocab()
    pieces = tokenizer.tokenize(token)
    if token in vocab or f"{token}</w>" in vocab or (len(pieces) == 1 and pieces[0] != tokenizer.unk_token):
        raise ValueError(f"the tokenizer already knows {token!r}; pick a new `token`, e.g. '<{token.strip('<>')}-learned>'")


@dataclass(frozen=True)
class LearnedConcept:
    """A token and its learned input embeddings, with their provenance."""

    token: str
    embeddings: torch.Tensor = field(repr=False)
    """``(n_vectors, D)`` fp32 input embeddings; prompts use ``token`` in place of a word."""
    base_fingerprint: str
    """The base model (``unsee.models.fingerprint``) the concept was learned on."""
    model_fingerprint: str
    """The model it was learned through: the base, or the base with ``edit`` applied."""
    settings: dict[str, Any] = field(default_factory=dict)
    edit: dict[str, Any] | None = None
    """The edit applied while learning (method, concepts, hash), if any: an attack's inversion."""
    info: dict[str, Any] = field(default_factory=dict)
    unsee_version: str = __version__

    @property
    def n_vectors(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def tokens(self) -> dict[str, torch.Tensor]:
        """The mapping prompt encoders take (``encode_prompts(..., learned=c.tokens)``)."""
        return {self.token: self.embeddings}

    @property
    def digest(self) -> str:
        """A short hash of the embeddings (what an edit made from this concept records)."""
        return hashlib.sha256(self.embeddings.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()[:16]

    def check(self, pipe: StableDiffusionPipeline, *, force: bool = False) -> None:
        """Refuse a pipeline with another base model or another text width (``force`` skips the former)."""
        from unsee.models import fingerprint

        width = pipe.text_encoder.get_input_embeddings().embedding_dim
        if self.embeddings.shape[-1] != width:
            raise ConceptMismatch(
                f"learned concept {self.token!r} has {self.embeddings.shape[-1]}-wide embeddings, the model's text encoder "
                f"{width}: it was learned on another architecture"
            )
        if not force and fingerprint(pipe) != self.base_fingerprint:
            raise ConceptMismatch(
                f"learned concept {self.token!r} was learned on base model {self.base_fingerprint}, not {fingerprint(pipe)}; "
                "load that model, learn the concept again on this one, or pass `force=True`"
            )

    # -- files ---------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({self.token: self.embeddings.detach().cpu().float().contiguous()}, folder / WEIGHTS)
        meta = {"token": self.token, "n_vectors": self.n_vectors, "width": int(self.embeddings.shape[-1]),
                "base_fingerprint": self.base_fingerprint, "model_fingerprint": self.model_fingerprint,
                "settings": self.settings, "edit": self.edit, "digest": self.digest, "unsee_version": self.unsee_version,
                "info": self.info}  # fmt: skip
        (folder / META).write_text(json.dumps(meta, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> LearnedConcept:
        folder = Path(folder)
        if not (folder / META).exists() or not (folder / WEIGHTS).exists():
            raise FileNotFoundError(
                f"no learned concept at {folder} ({META} and {WEIGHTS} expected); learn one with `unsee invert --out {folder}`"
            )
        meta = json.loads((folder / META).read_text())
        weights = load_file(folder / WEIGHTS)
        return cls(token=meta["token"], embeddings=weights[meta["token"]].float(), base_fingerprint=meta["base_fingerprint"],
                   model_fingerprint=meta["model_fingerprint"], settings=meta.get("settings", {}), edit=meta.get("edit"),
                   info=meta.get("info", {}), unsee_version=meta.get("unsee_version", "?"))  # fmt: skip


Concept = str | LearnedConcept
"""What erasure methods and attacks take: a word or phrase the model knows, or a learned concept."""


def concept_name(c: Concept) -> str:
    """The text a concept stands for in prompts: the phrase itself, or the learned token."""
    return c.token if isinstance(c, LearnedConcept) else c


def learned_tokens(concepts: Iterable[Concept]) -> dict[str, torch.Tensor]:
    """Token -> embeddings for every learned concept among ``concepts`` (words are skipped)."""
    out: dict[str, torch.Tensor] = {}
    for c in concepts:
        if isinstance(c, LearnedConcept):
            if c.token in out and not torch.equal(out[c.token], c.embeddings):
                raise ValueError(f"two different learned concepts use the token {c.token!r}; give one another `token`")
            out[c.token] = c.embeddings
    return out


def check_learned(pipe: StableDiffusionPipeline, concepts: Sequence[LearnedConcept], *, force: bool = False) -> None:
    """Each learned concept fits ``pipe`` and its token is new to the tokenizer."""
    for c in concepts:
        c.check(pipe, force=force)
        check_new_token(pipe.tokenizer, c.token)


TOKEN_LIKE = re.compile(r"<[^<>\s]+>")
"""How a learned token is usually spelled: ``<frame>``, ``<clean>``."""


def unknown_tokens(text: str, known: Iterable[str]) -> list[str]:
    """The ``<...>`` pieces of ``text`` that are none of the ``known`` learned tokens: a learned concept left out
    (the tokenizer would split ``"<clean>"`` into characters and prompt with those instead)."""
    known = set(known)
    return [m for m in TOKEN_LIKE.findall(text) if m not in known]
