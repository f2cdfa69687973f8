"""Loading official checkpoints: safe unpickling, strict key checks, conversion."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from official_cases import require_cases, seeded_state
from taptr import TaptrError, load_official, load_weights
from taptr.cli import main as cli_main


@pytest.fixture(scope="module")
def official_state():
    """The seeded official state dict (skipped without the cases, failed under CI=true)."""
    require_cases(("keys.json", "seeded_weights.py"))
    return {k: torch.from_numpy(v) for k, v in seeded_state(3).items()}


def test_every_official_key_is_mapped(official_state):
    model = load_official(official_state)
    state = model.state_dict()
    assert len(official_state) == 614 and len(state) == 574
    assert sum(p.numel() for p in model.parameters()) == 40_040_803


def test_missing_unexpected_and_wrong_shape_are_named(official_state):
    broken = dict(official_state)
    del broken["transformer.decoder.layers.2.norm1.weight"]
    with pytest.raises(TaptrError, match="missing keys: transformer.decoder.layers.2.norm1.weight"):
        load_official(broken)
    broken = dict(official_state, **{"transformer.extra.weight": torch.zeros(3)})
    with pytest.raises(TaptrError, match="unexpected keys.*transformer.extra.weight"):
        load_official(broken)
    broken = dict(official_state, **{"input_proj.1.1.bias": torch.zeros(255)})
    with pytest.raises(TaptrError, match="wrong shapes: input_proj.1.1.bias"):
        load_official(broken)
    broken = dict(official_state)
    broken["transformer.decoder.class_embed.0.bias"] = torch.zeros(3)
    with pytest.raises(TaptrError, match="aliased head tensors differ"):
        load_official(broken)


def test_pth_with_namespace_loads_safely_and_converts(official_state, tmp_path):
    path = tmp_path / "taptrv2.pth"
    torch.save({"ema_model": official_state, "args": argparse.Namespace(lr=2e-4, dec_layers=5),
                "epoch": 3, "tb_global_step": 10}, path)
    model = load_official(path)
    out = tmp_path / "taptrv2.safetensors"
    assert cli_main(["convert", str(path), str(out)]) == 0
    converted = load_weights(out)
    assert converted.config.name == "taptrv2"
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, converted.state_dict()[name]), name


def test_unsafe_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"ema_model": {}, "payload": np.dtype("float32").__class__}, path)
    with pytest.raises(TaptrError, match="is not an official TAPTRv2 checkpoint: it holds "
                                         "Python objects other than tensors") as refused:
        load_official(path)
    assert "weights_only" not in str(refused.value)  # never PyTorch's advice to turn it off
    assert cli_main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "x.safetensors")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["pickle", "text", "truncated"])
def test_a_pth_that_is_not_a_checkpoint_gets_one_line_without_unsafe_advice(tmp_path, capsys,
                                                                            content):
    """A pickled object (PyTorch's message advises weights_only=False), a text file and a
    truncated file, through `taptr convert` (every torch.load site: `taptr.io.torch_files`)."""
    import pickle

    path = tmp_path / "model.pth"
    if content == "pickle":
        path.write_bytes(pickle.dumps({"weights": object}, protocol=4))
    elif content == "text":
        path.write_text("hello")
    else:
        torch.save({"ema_model": {"w": torch.zeros(3)}}, path)
        path.write_bytes(path.read_bytes()[:200])
    code = cli_main(["convert", str(path), str(tmp_path / "model.safetensors")])
    assert code == 2
    stderr = capsys.readouterr().err
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert f"{path} is not an official TAPTRv2 checkpoint" in stderr
    assert "weights_only" not in stderr and "Warning" not in stderr
