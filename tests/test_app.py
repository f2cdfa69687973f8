"""`taptr app`: the page's logic, the `/track` endpoint through gradio_client against the
server started as the README says, and the page itself in headless Chromium.

One server (`taptr app` in a subprocess, tiny random weights, CPU) serves every test of this
file that needs one. `TAPTR_APP_SCREENSHOT=docs/images/app.jpg` runs it with the bundled
weights instead and saves the browser test's screenshot there (how the README's picture is
made: `TAPTR_APP_SCREENSHOT=docs/images/app.jpg pytest tests/test_app.py -k chromium`).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio", reason="the app needs the extra: pip install 'taptr[app]'")
gradio_client = pytest.importorskip("gradio_client")

from taptr.app import core  # noqa: E402
from taptr.app.server import is_loopback  # noqa: E402
from taptr.app.ui import shown_in_page  # noqa: E402
from taptr.cli import main  # noqa: E402
from taptr.errors import TaptrError  # noqa: E402
from taptr.io import load_tracks, open_video  # noqa: E402
from tracking_helpers import (  # noqa: E402
    moving_square_frames,
    single_thread,
    tiny_weights_file,
    write_clip,
)

SCREENSHOT = os.environ.get("TAPTR_APP_SCREENSHOT")
MAX_FRAMES = 600 if SCREENSHOT else 40  # the picture shows the default limit
START_TIMEOUT_S = 120


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Tiny random weights (fast); the bundled ones when making the README's screenshot."""
    if SCREENSHOT:
        return None
    return str(tiny_weights_file(str(tmp_path_factory.mktemp("weights"))))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    return write_clip(folder / "clip.mp4", moving_square_frames(10, 48, 64), pix_fmt="yuv420p")


# --------------------------------------------------------------------------- without a server

def test_points_are_strings_t_x_y_numbered_from_0():
    value = core.format_point(3, 120.0, 80.5)
    assert value == "3,120,80.5"
    assert core.point_label(0, value) == "#0  frame 3: (120, 80.5)"
    np.testing.assert_array_equal(core.points_to_queries([value, "0,1,2"]),
                                  [[3, 120, 80.5], [0, 1, 2]])
    assert core.points_to_queries([]) is None and core.points_to_queries(None) is None


def test_the_query_frame_shows_the_points_in_their_overlay_colours():
    frame = np.zeros((60, 80, 3), np.uint8)
    queries = np.array([[2, 20, 30], [0, 60, 15]], np.float32)
    drawn = core.draw_queries(frame, queries, 2)
    assert drawn.shape == frame.shape and frame.max() == 0  # a copy
    assert drawn[30, 20].max() > 0  # the point on this frame: a filled disc
    assert drawn[15, 60].max() == 0 and drawn[15, 55:66].max() > 0  # another frame: a ring
    assert core.draw_queries(frame, None, 0) is frame


class _NoTracking:
    device = "cpu"

    def track(self, *args, **kwargs):
        raise AssertionError("bad input must be refused before tracking")


@pytest.mark.parametrize("change, message", [
    (dict(points="", grid=0), "no points to track"),
    (dict(points=None, grid=0), "no points to track"),
    (dict(grid=core.MAX_GRID + 1), "grid size must be a whole number"),
    (dict(grid=2.5), "grid size must be a whole number"),
    (dict(points="0,1,2", mask=np.ones((48, 64), np.uint8)), "a mask selects grid points"),
    (dict(points="0,1", grid=0), "point 0"),
    (dict(points="0,1,2", occluded="dotted"), "occluded must be one of"),
    (dict(points="0,1,2", trail=-2), "trail must be"),
    (dict(video=None, points="0,1,2"), "no video"),
])
def test_bad_requests_are_refused_before_tracking(clip, tmp_path, change, message):
    request = core.TrackRequest(**{"video": clip, "points": "0,10,10", **change})
    with pytest.raises(TaptrError, match=message):
        core.track_to_folder(_NoTracking(), request, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_track_button_writes_overlay_and_three_track_files(clip, tmp_path):
    from taptr.app.ui import Handlers
    from tracking_helpers import tiny_tracker

    mask = np.zeros((48, 64), np.uint8)
    mask[:, :32] = 255  # the left half: the left column of a 2x2 grid
    stages = []
    handlers = Handlers(tiny_tracker(), tmp_path, max_frames=40)
    overlay, files, summary = handlers.track_page(
        str(clip), ["0,10,12", "6,40,20"], 2, 3, mask, False, 0, "hidden",
        progress=lambda value, desc: stages.append(desc))
    assert [Path(path).name for path in files] == list(core.TRACK_FILES)
    assert Path(overlay).name == "overlay.mp4" and open_video(overlay).num_frames == 10
    tracks = load_tracks(files[1])
    np.testing.assert_array_equal(tracks["queries"], [[0, 10, 12], [6, 40, 20], [3, 15.5, 11.5],
                                                      [3, 15.5, 35.5]])
    assert not tracks["visible"][1, :6].any()  # no backward tracking
    assert summary.startswith("Tracked 4 points through 10 frames (64x48)")
    assert stages == ["tracking", "writing the tracks", "drawing the overlay video"]
    assert all(Path(path).parent.parent == tmp_path / "results" for path in files)


def test_videos_over_the_limit_or_not_videos_are_refused(clip, tmp_path):
    with pytest.raises(TaptrError, match="has 10 frames; this app tracks at most 9"):
        core.open_upload(clip, max_frames=9)
    assert core.open_upload(clip, max_frames=None).num_frames == 10
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(TaptrError, match="not a video file"):
        core.open_upload(junk)


def test_handlers_show_one_line_messages_never_tracebacks(tmp_path):
    upload = str(tmp_path / "secret" / "clip.mp4")

    @shown_in_page
    def refuses(video):
        raise TaptrError(f"{video}: <bad>\nvideo")

    @shown_in_page
    def crashes(video):
        raise RuntimeError("boom")

    with pytest.raises(gr.Error) as error:
        refuses(upload)
    assert error.value.message == "clip.mp4: &lt;bad&gt; video"  # no folder, escaped, one line
    with pytest.raises(gr.Error, match="unexpected error .RuntimeError: boom.; see the server"):
        crashes(upload)


def test_only_loopback_addresses_count_as_local():
    assert all(map(is_loopback, ["127.0.0.1", "127.0.1.1", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "192.168.1.2", "::", "example.org"]))


def test_without_gradio_the_command_names_the_extra(monkeypatch, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gradio" else real_find_spec(name, *a))
    assert main(["app"]) == 2
    assert capsys.readouterr().err.strip() == ('taptr app: error: the web app needs Gradio: '
                                               'pip install "taptr[app]"')


def test_a_public_host_prints_a_warning(monkeypatch, capsys):
    import taptr.app.server

    class FakeServer:
        url, work_dir, closed = "http://0.0.0.0:7860/", Path("/tmp/x"), False

        def wait(self):
            raise KeyboardInterrupt

        def close(self):
            FakeServer.closed = True

    monkeypatch.setattr(taptr.app.server, "start_app", lambda **kwargs: FakeServer())
    assert main(["app", "--host", "0.0.0.0"]) == 0
    captured = capsys.readouterr()
    assert "warning: --host 0.0.0.0 makes the page reachable from other machines" in captured.err
    assert "open http://0.0.0.0:7860/ in a browser" in captured.out and FakeServer.closed
    assert main(["app", "--max-frames", "-1"]) == 2


# --------------------------------------------------------------------------- the server

class Served:
    """`taptr app` running in a subprocess: `url`, `work_dir`, `stop()` -> its output."""

    def __init__(self, weights, max_frames: int):
        port = _free_port()
        command = [sys.executable, "-m", "taptr", "app", "--port", str(port), "--device", "cpu",
                   "--max-frames", str(max_frames)] + (["--weights", weights] if weights else [])
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.output: list[str] = []
        self.url = self._wait_for("open http").split()[3]
        self.work_dir = Path(self._wait_for("uploads and results in").split()[6])
        assert self.url == f"http://127.0.0.1:{port}/"

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def _wait_for(self, text: str) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.output.append(line)
            if text in line:
                return line
        self.stop()
        raise AssertionError(f"taptr app did not print {text!r}:\n{''.join(self.output)}")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        time.sleep(0.2)
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "".join(self.output)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(weights):
    server = Served(weights, MAX_FRAMES)
    yield server
    server.stop()


@pytest.fixture
def client(served, tmp_path):
    return gradio_client.Client(served.url, download_files=str(tmp_path), verbose=False)


def test_track_endpoint_matches_the_python_api(served, client, clip, weights, tmp_path):
    from gradio_client import handle_file

    from taptr.tracker import Tracker

    points = "0,10,12;4,30.5,20"
    overlay, csv = client.predict(handle_file(str(clip)), points, 0, api_name="/track")
    assert Path(overlay).name == "overlay.mp4" and Path(csv).name == "tracks.csv"
    video = open_video(overlay)
    assert (video.num_frames, video.size) == (10, (64, 48))

    from taptr.io import parse_points

    expected = Tracker.from_pretrained(weights, device="cpu").track(
        str(clip), queries=parse_points(points), progress=False)
    expected.save(tmp_path / "expected.csv")
    got, want = load_tracks(csv), load_tracks(tmp_path / "expected.csv")
    assert got["tracks"].shape == (2, 10, 2)
    np.testing.assert_allclose(got["tracks"], want["tracks"], atol=2e-3)
    np.testing.assert_array_equal(got["visible"], want["visible"])
    np.testing.assert_allclose(got["visibility"], want["visibility"], atol=2e-3)

    _, grid_csv = client.predict(handle_file(str(clip)), "", 2, api_name="/track")
    assert load_tracks(grid_csv)["tracks"].shape == (4, 10, 2)


def test_bad_input_gets_a_message_and_the_server_keeps_serving(served, client, clip, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    junk = tmp_path / "holiday.mp4"
    junk.write_bytes(os.urandom(4000))
    long_clip = write_clip(tmp_path / "long.mp4", moving_square_frames(MAX_FRAMES + 1, 16, 16))
    refused = [(junk, "0,1,1", 0, "'holiday.mp4' is not a video file"),
               (long_clip, "0,1,1", 0, f"has {MAX_FRAMES + 1} frames; this app tracks at most "
                                       f"{MAX_FRAMES}"),
               (clip, "", 0, "no points to track"),
               (clip, "0,500,5", 0, "outside the 64x48 frame")]
    for video, points, grid, message in refused:
        with pytest.raises(AppError) as error:
            client.predict(handle_file(str(video)), points, grid, api_name="/track")
        assert message in str(error.value) and "Traceback" not in str(error.value)
        assert str(tmp_path) not in str(error.value)
    _, csv = client.predict(handle_file(str(clip)), "0,5,5", 0, api_name="/track")
    assert load_tracks(csv)["tracks"].shape == (1, 10, 2)
    assert served.process.poll() is None


# --------------------------------------------------------------------------- the page

def _chromium() -> tuple[str, str] | None:
    """(browser, chromedriver) paths, or None when either is missing."""
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                   "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("selenium", reason="browser tests need selenium (pip install selenium)")
    paths = _chromium()
    if paths is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium "
                    "chromium-driver); .ci/run installs it")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1400"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(paths[1]))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def real_clip(tmp_path_factory):
    """16 frames of the demo clip (bikes.mp4 with the demo extra, else a synthetic scene)."""
    from taptr.demo import load_demo_clip

    clip = load_demo_clip()
    folder = tmp_path_factory.mktemp("real")
    return write_clip(folder / "bikes.mp4", clip.frames[:16], fps=clip.fps, pix_fmt="yuv420p")


def _points(driver) -> list[str]:
    """The entries of the list of points."""
    from selenium.webdriver.common.by import By

    return [" ".join(token.text.split())
            for token in driver.find_elements(By.CSS_SELECTOR, "#taptr-points .token")]


def _set_query_frame(driver, index: int) -> None:
    """Type `index` into the query-frame slider's number box (as a user can)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    number = driver.find_element(By.CSS_SELECTOR, "#taptr-frame-index input[type=number]")
    number.send_keys(Keys.CONTROL, "a")
    number.send_keys(str(index), Keys.ENTER)
    time.sleep(0.5)  # the frame shown follows


def _toasts(driver) -> str:
    from selenium.webdriver.common.by import By

    return " | ".join(toast.text for toast in driver.find_elements(By.CSS_SELECTOR, ".toast-body"))


def _close_toasts(driver) -> None:
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, ".toast-body .toast-close"):
        driver.execute_script("arguments[0].click()", button)  # toasts may overlap


@pytest.mark.browser
def test_the_page_in_headless_chromium(browser, served, real_clip, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    browser.get(served.url)
    upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR,
                                                 "#taptr-video input[type=file]"))
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"not a video at all" * 200)
    upload.send_keys(str(junk))
    wait.until(lambda d: "'notes.mp4' is not a video file" in _toasts(d))
    assert "is not a video file" in browser.find_element(By.ID, "taptr-info").text
    _close_toasts(browser)

    # The video's own x (the last "Clear": the first clears Gradio's "not playable" badge).
    clear = browser.find_elements(By.CSS_SELECTOR, "#taptr-video button[aria-label='Clear']")
    browser.execute_script("arguments[0].click()", clear[-1])  # its icon takes native clicks
    upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR,
                                                 "#taptr-video input[type=file]"))
    upload.send_keys(str(real_clip))
    wait.until(lambda d: "16 frames, 640x272" in d.find_element(By.ID, "taptr-info").text)
    frame = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#taptr-frame img"))
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#taptr-frame img").size["width"] > 100)

    browser.find_element(By.ID, "taptr-track").click()  # no points yet
    wait.until(lambda d: "no points to track" in _toasts(d))
    _close_toasts(browser)

    frame = browser.find_element(By.CSS_SELECTOR, "#taptr-frame img")
    scale = 640 / frame.size["width"]  # video pixels per screen pixel
    for count, offset in enumerate(((-120, -20), (90, 30)), start=1):  # from the centre
        ActionChains(browser).move_to_element_with_offset(frame, *offset).click().perform()
        wait.until(lambda d: len(_points(d)) == count)
    listed = _points(browser)
    clicked = re.fullmatch(r"#0 frame 0: \((\d+), (\d+)\)", listed[0])
    assert clicked and abs(int(clicked[1]) - (319.5 - 120 * scale)) <= 1
    assert abs(int(clicked[2]) - (135.5 - 20 * scale)) <= 1

    # A point on another query frame, removed again with its x.
    _set_query_frame(browser, 5)
    frame = browser.find_element(By.CSS_SELECTOR, "#taptr-frame img")
    ActionChains(browser).move_to_element_with_offset(frame, 0, 0).click().perform()
    wait.until(lambda d: len(_points(d)) == 3 and _points(d)[2].startswith("#2 frame 5:"))
    remove = browser.find_elements(By.CSS_SELECTOR, "#taptr-points .token .token-remove")
    browser.execute_script("arguments[0].click()", remove[-1])
    wait.until(lambda d: _points(d) == listed)
    _set_query_frame(browser, 0)

    browser.find_element(By.ID, "taptr-track").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#taptr-overlay video[src]"))
    wait.until(lambda d: "Tracked 2 points through 16 frames" in
               d.find_element(By.ID, "taptr-status").text)
    files = browser.find_element(By.ID, "taptr-files").text.replace("\n", "")
    assert all(name in files for name in ("tracks.csv", "tracks.npz", "tracks.json"))
    assert not _toasts(browser)
    shot = tmp_path / "app.png"
    browser.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.5)  # let the video element paint its first frame
    browser.save_screenshot(str(shot))
    if SCREENSHOT:  # .png as taken, .jpg a quarter of the size
        from PIL import Image

        with Image.open(shot) as image:
            image.convert("RGB").save(SCREENSHOT, quality=88, optimize=True)


def test_stopping_removes_the_temporary_folder(served):
    """(Last: stops the module's server.)"""
    assert served.work_dir.is_dir()
    output = served.stop()
    assert served.process.returncode == 0, output
    assert "taptr app: stopped" in output and "Traceback" not in output
    assert not served.work_dir.exists()
