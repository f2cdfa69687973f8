"""Every command that writes checks its output location before any work: a location that
cannot be written (here /proc, where even root cannot create anything, though permission
bits and `os.access` say it may) is refused with one line and exit status 2, before a model,
a clip, a checkpoint or a download is touched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taptr.cli import main
from taptr.errors import TaptrError
from taptr.io.atomic import check_can_create_folder, check_can_write_file
from tracking_helpers import moving_square_frames, write_clip

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
UNWRITABLE = "/proc/taptr-test/out"


def _work_started(*args, **kwargs):
    raise AssertionError("the command started its work before checking its output location")


@pytest.fixture
def no_work(monkeypatch):
    """Any model load, clip load, checkpoint read, download or trainer fails the test."""
    import taptr.data.scenes.texture_fetch as texture_fetch
    import taptr.demo
    import taptr.loading
    import taptr.official
    import taptr.tracker
    import taptr.training.trainer

    monkeypatch.setattr(taptr.loading, "load_model", _work_started)
    monkeypatch.setattr(taptr.tracker, "load_model", _work_started)
    monkeypatch.setattr(taptr.tracker.Tracker, "from_pretrained", _work_started)
    monkeypatch.setattr(taptr.demo, "load_demo_clip", _work_started)
    monkeypatch.setattr(taptr.official, "load_official", _work_started)
    monkeypatch.setattr(texture_fetch, "fetch_textures", _work_started)
    monkeypatch.setattr(taptr.training.trainer, "Trainer", _work_started)


def _refused(capsys, argv: list[str]) -> str:
    code = main(argv)
    stderr = capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "/proc/taptr-test" in lines[0]
    return lines[0]


def test_track_refuses_an_unwritable_output_folder_before_tracking(no_work, tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4", moving_square_frames(6, 36, 50))
    line = _refused(capsys, ["track", str(clip), "--out", UNWRITABLE, "--no-progress"])
    assert line.startswith("taptr track: error: cannot write output folder")


@pytest.mark.parametrize("argv", [
    ["demo", "--out", UNWRITABLE],
    ["export", "--out", UNWRITABLE],
    ["convert", "taptrv2.pth", f"{UNWRITABLE}/taptrv2.safetensors"],
    ["textures", "fetch", UNWRITABLE],
    ["train", "--out", UNWRITABLE, "--steps", "1"],
])
def test_every_writing_command_refuses_an_unwritable_output_before_its_work(no_work, capsys,
                                                                            argv):
    if argv[0] == "export":
        pytest.importorskip("onnxruntime")
    assert _refused(capsys, argv).startswith(f"taptr {argv[0]} error:".replace(" error", ": error"))


@pytest.mark.parametrize("option", ["--json", "--per-video"])
def test_eval_refuses_unwritable_result_files_before_reading_data(no_work, tmp_path, capsys,
                                                                  option):
    """/proc itself exists (and `os.access` calls it writable for root): only creating a file
    there tells."""
    _refused(capsys, ["eval", "--data", str(tmp_path / "missing.pkl"), "--tracker", "static",
                      option, "/proc/taptr-test-results.json"])


def test_checks_create_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    check_can_create_folder(target)
    check_can_write_file(target / "c" / "results.json")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "existing").mkdir()
    check_can_create_folder(tmp_path / "existing")
    assert list((tmp_path / "existing").iterdir()) == []


def test_checks_name_what_is_wrong(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TaptrError, match="is a file"):
        check_can_create_folder(blocker / "sub")
    with pytest.raises(TaptrError, match="not a folder"):
        check_can_create_folder(blocker)
    with pytest.raises(TaptrError, match="it is a folder"):
        check_can_write_file(tmp_path)
    with pytest.raises(TaptrError, match="cannot write '/proc/taptr-test/out/x.json'"):
        check_can_write_file(Path(UNWRITABLE) / "x.json")
    assert blocker.read_text() == "x"


def test_several_processes_may_probe_the_same_new_output_folder_at_once(tmp_path):
    """torchrun starts every process on the same --out: probing a folder that another
    process is creating or removing at that moment must not fail (it did: 'File exists',
    'No such file or directory')."""
    import threading

    from taptr.io.atomic import check_can_create_folder

    errors = []

    def probe(folder):
        try:
            for _ in range(30):
                check_can_create_folder(folder)
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    for round_ in range(10):
        folder = tmp_path / f"run{round_}" / "two"
        threads = [threading.Thread(target=probe, args=(folder,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors[:3]
