"""UCE's closed form (its equation 7): the solve is the minimiser it claims, and its inputs are checked."""

from __future__ import annotations

import json

import pytest
import torch

from unsee.methods import erase, make_config
from unsee.methods.uce import concept_rows


def _rows(pipe, words, positions="last"):
    return torch.cat(concept_rows(pipe, words, positions, {}))


def test_tiny_lamb_sends_the_erased_row_to_its_guide(tiny_pipe, positions="last"):
    # with lamb -> 0 and no preserved concept, W c_e = W_old c_n holds exactly (one row is always solvable;
    # "rest"'s many near-equal padding rows make it a least-squares fit, tested as a stationary point below)
    cfg = make_config("uce", lamb=1e-6, positions=positions)
    edit = erase(tiny_pipe, ["circle"], cfg)
    c_e = _rows(tiny_pipe, ["circle"], positions)
    c_n = concept_rows(tiny_pipe, [""], positions, {}, length=len(c_e))[0]
    params = dict(tiny_pipe.unet.named_parameters())
    assert len(edit.tensors) == len(cfg.changed_params(tiny_pipe.unet))
    for key, w in edit.tensors.items():
        w_old = params[key.split(".", 1)[1]].detach()
        torch.testing.assert_close(c_e[: len(c_n)] @ w.T, c_n @ w_old.T, atol=1e-3, rtol=1e-3)


def test_preserved_rows_move_less_than_without_preservation(tiny_pipe):
    keep = ["square", "star"]
    c_p = _rows(tiny_pipe, keep)
    params = dict(tiny_pipe.unet.named_parameters())

    def drift(edit):
        return sum(float(((c_p @ w.T) - (c_p @ params[k.split(".", 1)[1]].detach().T)).norm()) for k, w in edit.tensors.items())

    plain = erase(tiny_pipe, ["circle"], make_config("uce"))
    kept = erase(tiny_pipe, ["circle"], make_config("uce", preserve=tuple(keep), preserve_scale=10.0))
    assert drift(kept) < 0.5 * drift(plain)


@pytest.mark.parametrize("positions", ["last", "rest"])
def test_the_solve_is_the_stationary_point_of_the_objective(tiny_pipe, positions):
    # gradient of s_e||W c_e - W_old c_n||^2 + s_p||W c_p - W_old c_p||^2 + lamb||W - W_old||^2 vanishes at W
    cfg = make_config("uce", preserve=("star",), lamb=0.3, erase_scale=2.0, preserve_scale=0.5, positions=positions)
    edit = erase(tiny_pipe, ["circle"], cfg)
    c_e, c_p = _rows(tiny_pipe, ["circle"], positions), _rows(tiny_pipe, ["star"], positions)
    c_n = concept_rows(tiny_pipe, [""], positions, {}, length=len(c_e))[0]
    c_e = c_e[: len(c_n)]
    key = sorted(edit.tensors)[0]
    w_old = dict(tiny_pipe.unet.named_parameters())[key.split(".", 1)[1]].detach().double()
    w = edit.tensors[key].double().requires_grad_(True)
    c_e, c_p, c_n = c_e.double(), c_p.double(), c_n.double()
    obj = (2.0 * ((c_e @ w.T - c_n @ w_old.T) ** 2).sum() + 0.5 * ((c_p @ w.T - c_p @ w_old.T) ** 2).sum()
           + 0.3 * ((w - w_old) ** 2).sum())  # fmt: skip
    (grad,) = torch.autograd.grad(obj, w)
    assert float(grad.abs().max()) < 1e-3 * max(1.0, float(w_old.abs().max()))


def test_bad_sets_are_refused(tiny_pipe):
    with pytest.raises(ValueError, match="no concept given"):
        erase(tiny_pipe, [], make_config("uce"))
    with pytest.raises(ValueError, match="`preserve` holds the erased concept 'circle'"):
        erase(tiny_pipe, ["circle"], make_config("uce", preserve=("star", "circle")))
    with pytest.raises(ValueError, match="lamb must be positive"):
        make_config("uce", lamb=0.0)
    with pytest.raises(ValueError, match="uce has no setting iterations"):
        make_config("uce", iterations=10)


def test_cli_erases_in_closed_form_and_refuses_training_flags(tmp_path, capsys):
    from unsee.cli import main

    out = tmp_path / "uce"
    assert main(["erase", "--method", "uce", "--concept", "circle", "--set", "positions=rest", "--out", str(out),
                 "--no-preview"]) == 0  # fmt: skip
    saved = json.loads((out / "edit.json").read_text())
    assert saved["method"] == "uce" and saved["config"]["positions"] == "rest" and saved["seed"] is None
    assert not (out / "checkpoint.pt").exists()
    capsys.readouterr()
    assert main(["erase", "--method", "uce", "--concept", "circle", "--iterations", "5", "--out", str(tmp_path / "x"),
                 "--no-preview"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "uce has no setting iterations" in err and len(err.splitlines()) == 1
