"""Several processes under ``accelerate launch``, with the results of one.

Work is split into the same pieces one process would compute (so every piece is computed exactly as it would be
alone), each process computes its share, and every process gathers all of it in order. Without accelerate, or in
one process, everything is this process's and nothing is gathered.
"""

from __future__ import annotations

from typing import Any


def state() -> Any | None:
    """The accelerate state when several processes run, else None."""
    try:
        from accelerate import PartialState

        s = PartialState()
    except Exception:  # accelerate missing or not initialisable: one process
        return None
    return s if s.num_processes > 1 else None


def processes() -> int:
    """How many processes share the work (1 without accelerate)."""
    s = state()
    return 1 if s is None else s.num_processes


def is_main_process() -> bool:
    """Whether this process writes the outputs (the only one, or accelerate's main one)."""
    s = state()
    return s is None or s.is_main_process


def contiguous(n: int) -> tuple[range, Any | None]:
    """This process's contiguous slice of ``n`` items, and the state (None: one process, all items)."""
    s = state()
    if s is None:
        return range(n), None
    per = -(-n // s.num_processes)
    return range(s.process_index * per, min(n, (s.process_index + 1) * per)), s


def round_robin(n: int) -> tuple[list[int], Any | None]:
    """Items ``i`` with ``i % processes == rank`` of ``n`` (shares stay even when items grow in cost), and the state."""
    s = state()
    if s is None:
        return list(range(n)), None
    return list(range(s.process_index, n, s.num_processes)), s


def gather(obj: Any, s: Any | None) -> list[Any]:
    """Every process's ``obj``, in process order (``[obj]`` in one process)."""
    if s is None:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])
