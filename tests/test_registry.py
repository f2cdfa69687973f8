"""The one registry (name -> preset, default tracking options, weights file) and the one loader
(`taptr.load_model`, `taptr.create_model`): every registered name builds, every one with
weights loads and agrees with its file, unknown names are refused listing the known ones, and
every entry point (`taptr track`, training's `init_weights`) takes the names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import taptr
from taptr import TaptrError, create_model, get_preset, list_models, load_model
from taptr.cli import main
from taptr.models import registry
from taptr.models.options import TrackingOptions
from taptr.weights import read_weights_metadata
from tracking_helpers import moving_square_frames, write_clip

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny_weights: conftest.py
PACKAGE = Path(taptr.__file__).resolve().parent


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made in a test vanish after it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", moving_square_frames(6, 36, 50))


def test_the_registry_holds_the_presets_and_the_bundled_weights():
    assert {"taptrv2", "small", "tiny", "taptr-small"} <= set(list_models())
    assert registry.DEFAULT_MODEL in list_models(pretrained=True)
    assert all(registry.get_entry(name).weights is None for name in ("taptrv2", "small", "tiny"))
    assert registry.get_entry("taptr-small").preset == "small"
    assert set(taptr.PRESETS) == {"taptrv2", "small", "tiny"}  # the name kept from before
    assert taptr.PRESETS["small"]() == get_preset("small")


@pytest.mark.parametrize("name", list_models())
def test_every_registered_name_builds_with_its_preset_and_options(name):
    entry = registry.get_entry(name)
    model = create_model(name, pretrained=False)
    assert model.config == get_preset(entry.preset)
    assert model.default_options == entry.options
    assert model.training  # random weights, ready to train


@pytest.mark.parametrize("name", list_models(pretrained=True))
def test_every_registered_weights_file_loads_and_agrees_with_the_registry(name):
    """The file's own config and default options are those the registry states."""
    entry = registry.get_entry(name)
    stored_config, stored_options = read_weights_metadata(entry.weights)
    assert stored_config == get_preset(entry.preset)
    assert stored_options == entry.options
    model = load_model(name)
    assert not model.training and model.config == stored_config
    assert model.default_options == entry.options
    same = create_model(name)
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, same.state_dict()[key]), key


def test_none_loads_the_default_model():
    default, named = load_model(None), load_model(registry.DEFAULT_MODEL)
    assert default.config == named.config
    assert all(torch.equal(a, b) for a, b in zip(default.parameters(), named.parameters()))


def test_unknown_names_are_refused_listing_the_known_ones():
    with pytest.raises(TaptrError, match="unknown model 'nope'; registered: small, taptr-small, "
                                         "taptrv2, tiny"):
        create_model("nope")
    with pytest.raises(TaptrError, match=r"unknown preset 'nope'; choose one of \['small', "
                                         r"'taptrv2', 'tiny'\]"):
        get_preset("nope")
    with pytest.raises(TaptrError, match="weights not found: 'nope' is neither a file nor the "
                                         "name of registered weights \\(taptr-small\\)"):
        load_model("nope")
    with pytest.raises(TaptrError, match="'small' is a preset without a weights file: .*; "
                                         "registered weights: taptr-small"):
        load_model("small")


def test_registered_names_are_unique_and_presets_must_exist(scratch_registry):
    with pytest.raises(TaptrError, match="'small' is already registered"):
        registry.register("small", "tiny")
    with pytest.raises(TaptrError, match="unknown model 'huge'"):
        registry.register("mine", "huge")


def test_a_registered_name_carries_its_default_options(scratch_registry, tiny_weights):
    """Weights registered under a name load with the options the registry gives them, not
    those stored in the file; a new preset can be registered and built by name."""
    options = TrackingOptions(point_chunk=7, motion_correction_px=3.0)
    registry.register("my-tiny", "tiny", options, weights=tiny_weights)
    model = load_model("my-tiny")
    assert read_weights_metadata(tiny_weights)[1].point_chunk is None
    assert model.default_options == options and model.config == get_preset("tiny")
    registry.register("wide-tiny", lambda: get_preset("tiny").replace(name="wide-tiny",
                                                                      hidden_dim=64))
    assert taptr.build_model("wide-tiny").config.hidden_dim == 64
    assert "wide-tiny" in taptr.PRESETS


def test_taptr_track_accepts_registry_names(scratch_registry, tiny_weights, clip, tmp_path,
                                            capsys):
    registry.register("my-tiny", "tiny", weights=tiny_weights)
    for name in ("my-tiny", "taptr-small"):
        code = main(["track", str(clip), "--weights", name, "--points", "0,10,12",
                     "--no-overlay", "--out", str(tmp_path / name), "--no-progress"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert (tmp_path / name / "tracks.npz").is_file()
    code = main(["track", str(clip), "--weights", "tiny", "--points", "0,10,12",
                 "--out", str(tmp_path / "refused"), "--no-progress"])
    stderr = capsys.readouterr().err
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert "'tiny' is a preset without a weights file" in stderr
    assert not (tmp_path / "refused").exists()


def test_training_starts_from_a_registered_name(tmp_path):
    from taptr.training.config import TrainConfig
    from taptr.training.setup import load_initial_weights

    config = TrainConfig()
    config.model.init_weights = "taptr-small"
    config.check_inputs()  # a name is not a missing file
    config.model.init_weights = "small"  # a preset has no weights to start from
    with pytest.raises(TaptrError, match="model.init_weights: file not found: small"):
        config.check_inputs()
    model = taptr.build_model("small")
    load_initial_weights(model, "taptr-small")
    bundled = load_model("taptr-small")
    for key, tensor in bundled.state_dict().items():
        assert torch.equal(model.state_dict()[key], tensor), key
    with pytest.raises(TaptrError, match="differs from the 'tiny' preset being trained"):
        load_initial_weights(taptr.build_model("tiny"), "taptr-small")


def _calls(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    return {node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Name, ast.Attribute))}


def test_one_loader_every_entry_point_goes_through_load_model():
    """Outside the loader and the file formats' own modules, nothing opens weights itself:
    Tracker, the backends, the commands, evaluation, the app and training call `load_model`
    (exceptions: `taptr convert`, which converts one official checkpoint entry, and the
    export package, which checks the graphs it has just written)."""
    own = {"loading.py", "weights.py", "official.py", "cli/convert.py", "export/onnx_export.py"}
    readers = {"load_weights", "load_official", "OnnxTAPTRv2", "resolve_weights"}
    offenders = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                 if str(path.relative_to(PACKAGE)) not in own and _calls(path) & readers]
    assert not offenders, offenders


def test_the_registry_holds_names_only():
    """The registry imports no I/O and no network code: configs, options, errors only (so
    `build_model` can use it and no import cycle can form through it)."""
    tree = ast.parse((PACKAGE / "models" / "registry.py").read_text())
    imported = {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module.startswith("taptr")}
    assert imported == {"taptr.config", "taptr.errors", "taptr.models.options"}
