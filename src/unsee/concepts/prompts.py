"""Generic English prompt helpers shared by the core and any world: articles and neutral prompts."""

from __future__ import annotations

# Prompts that name no concept: where the talk's neutral c_n comes from, and what a spectrum marks.
DEFAULT_NEUTRAL: tuple[str, ...] = ("", "a picture", "an image", "a photo")


def article(word: str) -> str:
    """The article before ``word``: "an" before a vowel letter, else "a" (by spelling)."""
    return "an" if word[0] in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"
