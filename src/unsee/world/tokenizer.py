"""A CLIP tokenizer built in code from the world's caption vocabulary (no hub).

Every caption word is one token; any other word is split into characters, exactly as the
real CLIP tokenizer splits a rare word into pieces.
"""

from __future__ import annotations

import string

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 32


def _bpe(word: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    while len(word) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
        best, i = min(pairs)
        if best == 1 << 30:
            break
        word = word[:i] + [word[i] + word[i + 1]] + word[i + 2 :]
    return word


def build_vocab_and_merges(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merge list under which each of ``words`` is a single token.

    New merges are appended with the lowest priority, so words built earlier keep their
    single-token encoding (their BPE never runs out of higher-priority pairs before the end).
    """
    chars = string.ascii_lowercase + string.digits + ",.'-!?"
    vocab: dict[str, int] = {}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for w in words:
        pieces = _bpe(list(w[:-1]) + [w[-1] + "</w>"], ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
            pieces = [pair[0] + pair[1]] + pieces[2:]
    for special in (BOS, EOS):
        vocab[special] = len(vocab)
    return vocab, merges


def build_tokenizer(words: list[str], max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    vocab, merges = build_vocab_and_merges(words)
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    for w in words:
        ids = tok(w, add_special_tokens=False).input_ids
        if len(ids) != 1:  # a bug in the construction above, not a user error
            raise RuntimeError(f"tokenizer splits caption word {w!r} into {ids}")
    return tok
