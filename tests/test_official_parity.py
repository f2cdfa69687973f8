"""Parity with the official TAPTRv2 code on its stored test vectors.

Runs every `case_*.npz` of `TAPTR_OFFICIAL_CASES` (default ../shared/testdata/official): the
seeded official state dict is loaded through `taptr.load_official`, the stored inputs are run,
and outputs (and for case_a every stored intermediate) are compared within the tolerance of
that directory's README: max |diff| <= 1e-4. Without the cases every test is skipped, or
fails under CI=true (`official_cases.require_cases`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from official_cases import case_inputs, cases_dir, require_cases, seeded_state
from taptr import load_official
from taptr.models.taptrv2.common import inverse_sigmoid

TOLERANCE = 1e-4
# No case found: one placeholder, so that each test reports the missing cases itself.
CASES = sorted(cases_dir().glob("case_*.npz")) or [None]


def max_diff(ours: torch.Tensor, theirs: np.ndarray) -> float:
    ours = ours.detach().cpu().numpy()
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.abs(ours.astype(np.float64) - theirs.astype(np.float64)).max())


@pytest.fixture(scope="module", params=CASES, ids=lambda p: p.stem if p else "no-cases")
def case_run(request):
    require_cases()
    case = dict(np.load(request.param, allow_pickle=False))
    model = load_official(seeded_state(int(case["seed"])), official_compat=True)
    video, points, frames = case_inputs(case)
    with torch.no_grad():
        output = model(video, points, frames)
    return case, model, output


def test_outputs_match(case_run):
    case, _, output = case_run
    assert max_diff(output.boxes[0], case["pred_boxes"]) <= TOLERANCE
    assert max_diff(output.vis_logits[0], case["pred_logits"]) <= TOLERANCE
    ours_visible = torch.sigmoid(output.vis_logits[0, ..., 1]).numpy() > 0.5
    theirs_visible = 1 / (1 + np.exp(-case["pred_logits"][..., 1])) > 0.5
    assert np.array_equal(ours_visible, theirs_visible)


def test_intermediates_match(case_run):
    case, model, _ = case_run
    if "frame0_memory" not in case:
        pytest.skip("this case stores no intermediates")
    video, points, frames = case_inputs(case)
    with torch.no_grad():
        stages = model.backbone(video[0, :1])
        for index in range(4):
            key = f"frame0_backbone_layer{index + 1}"
            assert max_diff(stages[index][0], case[key]) <= TOLERANCE, key
            projected = model.input_proj[index](stages[index])
            assert max_diff(projected[0], case[f"frame0_input_proj_{index}"]) <= TOLERANCE
        memory, layout = model.encode_frames(video[0, :1])
        assert [list(s) for s in layout.shapes] == case["spatial_shapes"].tolist()
        assert layout.level_starts == case["level_start_index"].tolist()
        assert max_diff(memory[0], case["frame0_memory"]) <= TOLERANCE

        captured = []
        hook = model.decoder.register_forward_hook(lambda m, i, o: captured.append((i[0], o)))
        stream = model.stream(points, frames, num_frames=video.shape[1])
        stream.push(video)
        hook.remove()
        assert max_diff(stream.queries.initial_content[0], case["query_features"]) <= TOLERANCE

    inputs, layers = captured[0]
    assert case["win0_frames"].tolist() == [0, 7]
    assert np.array_equal(inputs.updated[0].numpy(), case["win0_update_mask"])
    pos_logits = torch.stack([layer.position_logits[0] for layer in layers])
    apu = torch.stack([torch.sigmoid(inverse_sigmoid(layer.apu_positions[0])) for layer in layers])
    vis = torch.stack([layer.vis_logits[0] for layer in layers])
    assert max_diff(pos_logits, case["win0_pos_logits"]) <= TOLERANCE
    assert max_diff(apu, case["win0_apu_pos"]) <= TOLERANCE
    assert max_diff(vis, case["win0_vis_logits"]) <= TOLERANCE


def test_batch_of_two_equals_single(case_run):
    """The official code only runs B = 1; ours must give each video's own result in a batch."""
    case, model, output = case_run
    video, points, frames = case_inputs(case)
    frames_count = min(video.shape[1], 14)
    video, flipped = video[:, :frames_count], video[:, :frames_count].flip(-1)
    frames = frames.clamp(max=frames_count - 1)
    with torch.no_grad():
        single = model(video, points, frames)
        batch = model(torch.cat((video, flipped)), points.repeat(2, 1, 1), frames.repeat(2, 1))
        other = model(flipped, points, frames)
    assert torch.allclose(batch.boxes[:1], single.boxes, atol=1e-5)
    assert torch.allclose(batch.boxes[1:], other.boxes, atol=1e-5)
