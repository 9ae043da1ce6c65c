"""How every benchmark leaves its result: OUT.json for programs, OUT.md for people."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(out: str | Path, report: dict, markdown: str, *, indent: int = 2, default=None) -> None:
    """Write ``report`` to OUT.json and ``markdown`` to OUT.md (creating OUT's folder), and print the Markdown."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=indent, default=default))
    out.with_suffix(".md").write_text(markdown)
    print(markdown)


def judge_flags(fingerprint: str) -> set[str]:
    """Classes the oracle and the second judge disagree on in the base model's images (benchmarks/judges.py),
    when that result was measured on the model ``fingerprint`` names; tables mark them ⚠."""
    f = Path(__file__).parent / "results" / "judges.json"
    if not f.exists():
        return set()
    d = json.loads(f.read_text())
    return set(d.get("flagged", [])) if d.get("model_fingerprint") == fingerprint else set()
