"""The unsee world: drawn scenes with known content, their captions, an oracle, and the mini model."""

from unsee.world.captions import NEUTRAL_PROMPTS, STYLE_WORDS, caption, caption_words, prompt
from unsee.world.render import (
    BACKGROUNDS,
    COLOUR_NAMES,
    COLOURS,
    FAMILIES,
    FAMILY_OF,
    HIDDEN_CONCEPT,
    OBJECTS,
    Scene,
    Thing,
    render,
    sample_scene,
)

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "COLOUR_NAMES",
    "FAMILIES",
    "FAMILY_OF",
    "HIDDEN_CONCEPT",
    "NEUTRAL_PROMPTS",
    "OBJECTS",
    "STYLE_WORDS",
    "Scene",
    "Thing",
    "caption",
    "caption_words",
    "prompt",
    "render",
    "sample_scene",
]
