"""Process-wide settings: the library leaves them alone unless asked, the `taptr` commands
set them for their own process. The allocator tuning (glibc `mallopt`,
`taptr.device.keep_freed_memory`) and PyTorch's CPU thread count (`--threads`)."""

from __future__ import annotations

import pytest
import torch

import taptr.device
from taptr.cli import build_parser, main
from taptr.cli.threads import DEFAULT_THREADS, apply_threads
from taptr.device import ALLOCATOR_SETTINGS, keep_freed_memory
from taptr.tracker import Tracker
from tracking_helpers import moving_square_frames, single_thread, tiny_model, write_clip


class FakeMallopt:
    """Records (parameter, value) calls; returns `answer` (glibc: 1 on success)."""

    def __init__(self, answer: int = 1):
        self.calls, self.answer = [], answer

    def __call__(self, option, value):
        self.calls.append((option.value, value.value))
        return self.answer


@pytest.fixture
def mallopt(monkeypatch):
    fake = FakeMallopt()
    monkeypatch.setattr(taptr.device, "_glibc_mallopt", lambda: fake)
    return fake


def test_a_library_tracker_leaves_the_allocator_alone(mallopt):
    tracker = Tracker(tiny_model(), device="cpu")
    with single_thread():
        tracker.track(moving_square_frames(4, 36, 50), grid=2, progress=False)
    assert mallopt.calls == []


def test_a_tracker_tunes_the_allocator_when_asked(mallopt):
    Tracker(tiny_model(), device="cpu", tune_allocator=True)
    assert mallopt.calls == list(ALLOCATOR_SETTINGS)


def test_the_track_command_tunes_the_allocator_of_its_process(mallopt, tiny_weights, tmp_path,
                                                              capsys):
    clip = write_clip(tmp_path / "clip.mp4", moving_square_frames(6, 36, 50))
    with single_thread():
        code = main(["track", str(clip), "--weights", tiny_weights, "--grid", "2", "--out",
                     str(tmp_path / "out"), "--no-overlay", "--no-progress", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    assert mallopt.calls == list(ALLOCATOR_SETTINGS)


def test_keep_freed_memory_reports_whether_glibc_accepted_every_setting(monkeypatch):
    refusing = FakeMallopt(answer=0)
    monkeypatch.setattr(taptr.device, "_glibc_mallopt", lambda: refusing)
    assert keep_freed_memory() is False
    monkeypatch.setattr(taptr.device, "_glibc_mallopt", lambda: None)  # not glibc
    assert keep_freed_memory() is False


# ----------------------------------------------------------------------------- threads
COMPUTING_COMMANDS = ("track", "demo", "eval", "export", "app", "train")


def _subparser(name: str):
    parser = build_parser()
    return next(action for action in parser._actions  # noqa: SLF001
                if hasattr(action, "choices") and action.choices).choices[name]


@pytest.mark.parametrize("command", COMPUTING_COMMANDS)
def test_every_computing_command_takes_threads_with_the_measured_default(command):
    parser = _subparser(command)
    option = next(a for a in parser._actions if "--threads" in a.option_strings)  # noqa: SLF001
    assert option.default is None  # None: $OMP_NUM_THREADS, else DEFAULT_THREADS
    assert f"else {DEFAULT_THREADS}" in option.help and "docs/tracking.md" in option.help


@pytest.mark.parametrize("environment, given, expected", [
    (None, None, DEFAULT_THREADS), ("2", None, 2), ("junk", None, DEFAULT_THREADS),
    ("2", 3, 3), (None, 2, 2),
])
def test_threads_default_to_omp_num_threads_else_the_measured_default(monkeypatch, environment,
                                                                      given, expected):
    import argparse

    if environment is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", environment)
    before = torch.get_num_threads()
    try:
        assert apply_threads(argparse.Namespace(threads=given)) == expected
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)


def test_demo_applies_threads_before_its_work(monkeypatch, tmp_path, capsys):
    import taptr.demo

    seen = []

    def stop(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise KeyboardInterrupt

    monkeypatch.setattr(taptr.demo, "load_demo_clip", stop)
    before = torch.get_num_threads()
    try:
        assert main(["demo", "--out", str(tmp_path / "demo"), "--threads", "2"]) == 130
    finally:
        torch.set_num_threads(before)
    assert seen == [2]
