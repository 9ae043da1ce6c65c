"""Under `accelerate launch` (here on 2 CPU processes), `unsee evaluate` and `unsee spectrum` write the very JSON one
process writes, number for number (issue 28, item 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

DRIVER = """
import sys
from unsee.cli import main
sys.exit(main({argv!r}))
"""


def launch(tmp_path, n: int, argv: list[str]) -> None:
    script = tmp_path / f"driver{n}.py"
    script.write_text(DRIVER.format(argv=argv))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(n), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.parametrize("command", ["evaluate", "spectrum", "evaluate-prompts"])
def test_two_processes_write_what_one_writes(tmp_path, command):
    from unsee.cli import main

    edit = tmp_path / "edit"
    assert main(["erase", "--method", "uce", "--concept", "circle", "--out", str(edit), "--no-preview"]) == 0
    outs = {}
    for n in (1, 2):
        if command == "evaluate-prompts":  # 2 settings groups, 3 batches of 2 rows: shared, kept by one process
            csv_path = tmp_path / "prompts.csv"
            shapes = ("a red circle", "a blue square", "a green triangle", "a star on stripes", "a yellow hexagon")
            csv_path.write_text("prompt,evaluation_seed,evaluation_guidance\n"
                                + "".join(f"{p},{100 + i},{6.0 if i % 2 else 7.5}\n" for i, p in enumerate(shapes)))  # fmt: skip
            out = tmp_path / f"prompts{n}" / "eval.json"
            argv = ["evaluate", "--edit", str(edit), "--prompts", str(csv_path), "--metric", "nudenet", "--n", "2",
                    "--batch-size", "2", "--out", str(out)]  # fmt: skip
        elif command == "evaluate":
            out = tmp_path / f"eval{n}.json"
            argv = ["evaluate", "--edit", str(edit), "--n", "1", "--no-check", "--out", str(out)]
        else:
            out = tmp_path / f"spec{n}" / "spectrum.json"
            argv = ["spectrum", "--edit", str(edit), "--words", "circle", "square", "red", "blue", "dotted", "--draws", "2",
                    "--extremes", "2", "--n", "1", "--cache", str(tmp_path / f"cache{n}"), "--out", str(out.parent)]  # fmt: skip
        launch(tmp_path, n, argv)
        outs[n] = json.loads(out.read_text())
        if command == "evaluate-prompts":  # paths differ by run; the numbers, per prompt and in all, must not
            cache = sorted(p.name for p in (out.parent / "eval" / "cache").rglob("*.pt"))
            outs[n] = ({k: v for k, v in outs[n].items() if k not in ("per_prompt_csv", "grids")},
                       out.with_suffix(".csv").read_text(), cache)  # fmt: skip
        if command == "spectrum":  # the extremes' images are drawn through the sharded sampler too
            outs[n] = (outs[n], json.loads((out.parent / "empirical.json").read_text()))
    assert outs[2] == outs[1]
