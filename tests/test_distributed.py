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


@pytest.mark.parametrize("command", ["evaluate", "spectrum"])
def test_two_processes_write_what_one_writes(tmp_path, command):
    from unsee.cli import main

    edit = tmp_path / "edit"
    assert main(["erase", "--method", "uce", "--concept", "circle", "--out", str(edit), "--no-preview"]) == 0
    outs = {}
    for n in (1, 2):
        if command == "evaluate":
            out = tmp_path / f"eval{n}.json"
            argv = ["evaluate", "--edit", str(edit), "--n", "1", "--no-check", "--out", str(out)]
        else:
            out = tmp_path / f"spec{n}" / "spectrum.json"
            argv = ["spectrum", "--edit", str(edit), "--words", "circle", "square", "red", "blue", "dotted", "--draws", "2",
                    "--extremes", "2", "--n", "1", "--cache", str(tmp_path / f"cache{n}"), "--out", str(out.parent)]  # fmt: skip
        launch(tmp_path, n, argv)
        outs[n] = json.loads(out.read_text())
        if command == "spectrum":  # the extremes' images are drawn through the sharded sampler too
            outs[n] = (outs[n], json.loads((out.parent / "empirical.json").read_text()))
    assert outs[2] == outs[1]
