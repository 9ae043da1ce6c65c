"""Keeping diffusers' and transformers' chatter out of unsee's output.

Loading a pipeline makes both libraries talk: transformers warns at import time that its image
processors fall back to PIL without torchvision, diffusers draws "Loading pipeline components..."
and transformers "Loading weights" bars. None of it is about what unsee was asked to do, so
:func:`quiet_libraries` lowers both libraries' logging to errors (errors still show) and turns
their own progress bars off while it is active, then puts everything back as it was. Hub download
bars stay on: a download is progress a user waits for.

This module imports neither library's models, so the CLI can enter it before anything imports
diffusers' pipelines (where the import-time warnings are printed).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Within this block, transformers and diffusers log only errors and draw no progress bars of their own.

    transformers is always quieted (its warnings come at import time); diffusers only where it is
    already imported, since importing it costs seconds that a command without it should not pay
    (:func:`unsee.models.load_pipeline` enters this block again after importing it).
    """
    from huggingface_hub import utils as hub
    from transformers.utils import logging as tlog

    logs = [tlog]
    if "diffusers" in sys.modules:
        from diffusers.utils import logging as dlog

        logs.append(dlog)
    before = [(log.get_verbosity(), log.is_progress_bar_enabled()) for log in logs]
    hub_disabled = hub.are_progress_bars_disabled()
    for log in logs:
        log.set_verbosity_error()
        log.disable_progress_bar()  # transformers' also turns the hub's download bars off: those come back below
    if not hub_disabled:
        hub.enable_progress_bars()
    try:
        yield
    finally:
        for log, (verbosity, bars) in zip(logs, before):
            log.set_verbosity(verbosity)
            if bars:
                log.enable_progress_bar()
        if hub_disabled:
            hub.disable_progress_bars()
        else:
            hub.enable_progress_bars()
