"""Moved to :mod:`unsee.metrics.judged` (any :class:`unsee.judges.Judge` reads the images, not only the oracle)."""

from unsee.metrics.judged import PromptResult, accuracy, judge_prompts, prompt_images, prompt_latents

__all__ = ["PromptResult", "accuracy", "judge_prompts", "prompt_images", "prompt_latents"]
