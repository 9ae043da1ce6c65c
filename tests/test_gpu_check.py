"""benchmarks/gpu.py, the GPU check's table, runs on a CPU with --tiny and writes its JSON and Markdown (issue 28)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_tiny_gpu_check_writes_its_table(tmp_path):
    out = tmp_path / "gpu"
    res = subprocess.run([sys.executable, str(BENCH), "--tiny", "--out", str(out)], capture_output=True, text=True,
                         timeout=600, env={"UNSEE_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["tiny"] and rep["device"] == "cpu" and rep["model_fingerprint"]
    assert set(rep["dtypes"]) == {"fp32", "bf16"}  # bf16 runs eap too: its fp32 logits meet bf16 embeddings
    for row in rep["dtypes"].values():
        for key in ("esd_s_per_update", "eap_s_per_update", "spectrum_s", "images_per_s", "erase_peak_mib"):
            assert row[key] > 0, key
        assert row["spectrum_s_projected_49k"] == row["spectrum_s"] * 49408 / row["spectrum_words"]
    md = out.with_suffix(".md").read_text()
    assert "| fp32 |" in md and "| bf16 |" in md


def test_gpu_check_refuses_to_pretend_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    res = subprocess.run([sys.executable, str(BENCH), "--out", str(tmp_path / "g")], capture_output=True, text=True,
                         timeout=300, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert res.returncode != 0 and "run with --tiny" in res.stderr
