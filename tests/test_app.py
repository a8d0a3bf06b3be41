"""rollingdepth-app: the web page, driven by a real headless Chromium (Debian's chromium and
chromium-driver through Selenium), against the app started as its own process on 127.0.0.1.

The unit tests at the top need neither a browser nor a server. The browser tests share one
app process (tiny checkpoint, fp32, one torch thread) and run in file order; the last one
stops the app and checks that it removed every file.
"""

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from .conftest import TINY_CHECKPOINT, require, require_module

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "samples" / "synthetic_scene.mp4"
IMAGES = REPO / "docs" / "images"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# A stage on the progress bar, as the page labels it: "snippets d=1 (8/10)".
STAGE = re.compile(r"\b(encode|snippets d=\d+|decode|coalign|merge|refine|write) \(\d+/\d+\)")
QUEUE = re.compile(r"queue: ?\d+/\d+")
# The pane (element id) of each progress bar on the page. Counted as elements, not as stage names
# in the page's text: Gradio also writes the stage, for a second, into an invisible region for
# screen readers (role=status), which Selenium's text includes.
BAR_PANES = """return Array.from(document.querySelectorAll('[role=progressbar]'))
    .filter(e => e.getClientRects().length > 0)
    .map(e => (e.closest('[id^="rd-"]') || {id: "outside the panes"}).id);"""

# The page's small settings and the run-video options that mean the same.
SMALL = {"res": 32, "dilations": "1,4", "frames": 12}
SMALL_CLI = ["--res", "32", "-d", "1,4", "--frames", "12"]
MAX_FRAMES = 48
MAX_UPLOAD_MB = 2


# ============================================================================ no browser
def test_durations_parse():
    from rollingdepth.frontends.app_files import parse_duration

    assert parse_duration("90") == 90
    assert parse_duration("30m") == 1800
    assert parse_duration("2h") == 7200
    assert parse_duration("1.5d") == 1.5 * 86400
    for bad in ("", "abc", "-5m", "0", "5 weeks"):
        with pytest.raises(ValueError, match="is not a duration"):
            parse_duration(bad)


def test_bad_command_line_is_one_line(capsys):
    from rollingdepth.frontends import app

    for args, expected in ((["--results-ttl", "soon"], "--results-ttl: 'soon' is not a duration"),
                           (["--max-frames", "0"], "--max-frames: 0 must be positive"),
                           (["--port", "70000"], "--port: 70000 is not a port number"),
                           (["--no-such-option"], "No such option")):
        with pytest.raises(SystemExit) as info:
            app.main(args)
        err = capsys.readouterr().err
        assert info.value.code == 2, args
        assert err.startswith("Error: ") and expected in err and err.count("\n") == 1, err


def test_workspace_keeps_results_for_their_time_to_live(tmp_path):
    from rollingdepth.frontends.app_files import Workspace

    ws = Workspace(ttl_s=600, parent=tmp_path)
    old = ws.new_run("session-a")
    (old / "a_pred.npy").write_bytes(b"x")
    ws.release(old)
    busy = ws.new_run("session-a")  # a job still running: never swept
    fresh = ws.new_run("session-b")
    ws.release(fresh)
    upload = ws.root / "0123abcd"  # Gradio's upload folders live in the root too
    upload.mkdir()
    (upload / "clip.mp4").write_bytes(b"x")
    assert old.parent.parent == ws.users and old.parent != fresh.parent  # one folder per user
    assert old.parent.name not in ("session-a",) and len(old.parent.name) == 24  # random, not the session id

    past = time.time() - 3600
    for path in (old, old / "a_pred.npy", busy, upload, upload / "clip.mp4"):
        os.utime(path, (past, past))
    removed = ws.sweep()
    assert set(removed) == {old, upload}
    assert not old.exists() and not upload.exists() and busy.exists() and fresh.exists()
    # Later than the time to live, everything not in use goes, and the emptied user folder too.
    removed = ws.sweep(now=time.time() + 700)
    assert fresh in removed and not fresh.parent.exists() and busy.exists()
    ws.close()
    assert not ws.root.exists()


def test_zip_of_frames_is_unpacked_flat_and_only_inside_its_folder(tmp_path):
    from rollingdepth.frontends.app_files import extract_frames
    from rollingdepth.io.video_io import InputError

    frame = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    archive = tmp_path / "shot.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("shot/frame2.png", frame)
        zf.writestr("shot/frame10.png", frame)
        zf.writestr("../../escape.png", frame)  # path traversal: lands inside the folder, flat
        zf.writestr("/abs/rooted.png", frame)
        zf.writestr("__MACOSX/shot/._frame2.png", b"junk")
        zf.writestr("notes.txt", b"not a frame")
    dest = extract_frames(archive, tmp_path / "out" / "shot", max_frames=10, max_bytes=10**6)
    assert sorted(p.name for p in dest.iterdir()) == ["escape.png", "frame10.png", "frame2.png", "rooted.png"]
    assert not (tmp_path / "escape.png").exists() and not Path("/abs/rooted.png").exists()

    with pytest.raises(InputError, match="shot.zip: the zip holds 4 frames; this page takes at most 3"):
        extract_frames(archive, tmp_path / "out2", max_frames=3, max_bytes=10**6)
    with pytest.raises(InputError, match="unpack to"):
        extract_frames(archive, tmp_path / "out3", max_frames=10, max_bytes=100)
    twice = tmp_path / "twice.zip"
    with zipfile.ZipFile(twice, "w") as zf:
        zf.writestr("a/0.png", frame)
        zf.writestr("b/0.png", frame)
    with pytest.raises(InputError, match="two frames are named 0.png"):
        extract_frames(twice, tmp_path / "out4", max_frames=10, max_bytes=10**6)
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(InputError, match="text.zip: not a readable zip file"):
        extract_frames(tmp_path / "text.zip", tmp_path / "out5", max_frames=10, max_bytes=10**6)


def test_page_settings_build_the_config_run_video_builds(tmp_path):
    from dataclasses import replace

    from rollingdepth.frontends.app import AppSettings, DepthService, PageForm, _page_message
    from rollingdepth.frontends.app_files import Workspace
    from rollingdepth.io.output_formats import output_format
    from rollingdepth.runtime.run_config import RunConfig

    service = DepthService(None, AppSettings(checkpoint="ckpt", dtype="fp32", max_res=256), Workspace(60, tmp_path))
    assert service.preset_values("full") == PageForm("full", res=256, dilations="1,10,25", snippet="3", refine=10)
    form = PageForm(preset="full", res=96, dilations="1, 4", snippet="2", refine=2, cmap="inferno", frames=12,
                    stereo="half-sbs", strength=5)
    expected = RunConfig.build("full", dict(checkpoint="ckpt", dtype="fp32", processing_res=96, dilations=[1, 4],
                                            snippet_lengths=[2], refine_step=2, cmaps=["inferno"], max_frames=12,
                                            save_png16=True, save_depth_video=True, save_stereo=["half-sbs"],
                                            stereo_strength=5.0))
    assert service.config(form) == expected
    # No layout: no stereo video; without a strength, the declared default
    plain = service.config(replace(form, stereo="none", strength=None))
    assert plain.save_stereo == [] and plain.stereo_strength == output_format("stereo").more_option("stereo_strength")[0]
    for change, message in (({"dilations": "2,4"}, "Dilations: must include 1, got [2, 4]"),
                            ({"dilations": "1,x"}, "Dilations: 'x' is not an integer"),
                            ({"res": 512}, "Resolution: 512 is outside 1..256 (the app's --max-res)"),
                            ({"cmap": "nope"}, "Colour map: unknown colour map 'nope'"),
                            ({"refine": -1}, "Refinement steps: -1 is not an integer between 0 and 500"),
                            ({"stereo": "3d"}, "Stereo 3D: unknown layout '3d'; one of half-sbs, full-sbs"),
                            ({"strength": 11}, "Stereo strength (% of width): 11.0 must be between 0 and 10"),
                            ({"strength": "x"}, "Stereo strength (% of width): 'x' is not a number")):
        with pytest.raises(ValueError) as info:
            service.config(replace(form, **change))
        assert _page_message(info.value).startswith(message), _page_message(info.value)
    service.workspace.close()


def test_frame_view_counts_frames_from_one_as_the_slider(tmp_path, monkeypatch):
    """Slider value i shows frame i of N (1..N): the title and the depth drawn are the same frame."""
    from rollingdepth.frontends import app as page

    depth = np.stack([np.full((4, 6), i, np.float32) for i in range(3)])  # frame i holds the value i - 1
    np.save(tmp_path / "d.npy", depth)
    drawn = []
    monkeypatch.setattr(page, "_with_colour_bar", lambda image, cmap, vmin, vmax, title: drawn.append((image, title)))
    state = {"npy": str(tmp_path / "d.npy"), "frames": 3, "cmap": "Greys_r", "range": [0.0, 2.0]}
    for index in (1, 3, 0, 9):
        page.DepthService.frame_view(state, index)
    titles = [title for _, title in drawn]
    assert titles == ["frame 1 of 3", "frame 3 of 3", "frame 1 of 3", "frame 3 of 3"]
    assert drawn[0][0].mean() < drawn[1][0].mean()  # Greys_r: frame 1 (value 0) is darker than frame 3 (value 2)


def test_anaglyph_preview_shows_the_strength():
    """A near white square on a far dark ground: at strength 0 the red (left eye) and cyan (right
    eye) squares line up; at 5 % of 200 px the red one lies 5 px right of the cyan one (in front
    of the screen: crossed), half the way each, as in the stereo videos."""
    from rollingdepth.frontends.app import anaglyph_preview

    image = np.full((60, 200, 3), 20, np.uint8)
    prediction = np.zeros((60, 200), np.float32)
    image[20:40, 90:110] = 255
    prediction[20:40, 90:110] = 1.0  # the nearest; the ground the farthest

    def centre(channel: np.ndarray) -> float:
        return float(np.nonzero(channel > 128)[1].mean())

    flat, deep = (anaglyph_preview(image, prediction, strength, (0.0, 1.0), 0.5) for strength in (0, 5))
    assert flat.shape == deep.shape == (60, 200, 3) and flat.dtype == np.uint8
    assert centre(flat[..., 0]) == centre(flat[..., 1]) == centre(flat[..., 2]) == 99.5
    assert centre(deep[..., 0]) == 99.5 + 3 and centre(deep[..., 1]) == centre(deep[..., 2]) == 99.5 - 2
    assert not np.array_equal(flat, deep)


def test_stereo_view_shows_the_frame_the_slider_shows(tmp_path):
    """The kept frames (small JPEGs) and the prediction: slider value i shows frame i of N; None
    without a stereo run or once the files are gone."""
    from rollingdepth.frontends.app import DepthService, anaglyph_preview
    from rollingdepth.frontends.app_files import keep_frames, kept_frame

    stripes = np.repeat((np.arange(1280) // 16 % 2 * 60).astype(np.uint8)[None, :, None], 40, 0)  # [40, 1280, 1]
    frames = [np.repeat(stripes + 40 * i, 3, 2) for i in range(1, 4)]
    folder = keep_frames(iter(frames), tmp_path / "kept", edge=640)
    assert kept_frame(folder, 0).shape == (20, 640, 3) and kept_frame(folder, 3) is None
    prediction = np.stack([np.linspace(0, i, 64, dtype=np.float32)[None].repeat(4, 0) for i in range(1, 4)])
    np.save(tmp_path / "p.npy", prediction)
    state = {"npy": str(tmp_path / "p.npy"), "stereo": {"frames": str(folder), "firsts": [0, 2],
                                                        "ranges": [(0.0, 2.0), (0.0, 3.0)], "convergence": 0.5}}
    assert DepthService.stereo_view({**state, "stereo": None}, 1, 5.0) is None
    for index, (frame, near_range) in {1: (0, (0.0, 2.0)), 3: (2, (0.0, 3.0)), 9: (2, (0.0, 3.0))}.items():
        shown = DepthService.stereo_view(state, index, 5.0)
        expected = anaglyph_preview(kept_frame(folder, frame), prediction[frame], 5.0, near_range, 0.5)
        assert np.array_equal(shown, expected), index
    shutil.rmtree(folder)
    assert DepthService.stereo_view(state, 1, 5.0) is None


# ============================================================================ the app and browsers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    def __init__(self, proc, url, log, tmp):
        self.proc, self.url, self.log, self.tmp = proc, url, log, tmp

    @property
    def root(self) -> Path:
        (root,) = (self.tmp / "tmp").glob("rollingdepth-app-*")
        return root

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def runs(self) -> set[Path]:
        return set(self.root.glob("users/*/run-*"))


def _start_app(tmp: Path, log_name: str, hold: Path | None = None):
    """The app as its own process (tiny checkpoint, fp32, one torch thread); (Popen, url, log).
    ``hold``: a job is held at its snippets while that file exists (app.HOLD_ENV)."""
    from rollingdepth.frontends.app import HOLD_ENV

    port = _free_port()
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",  # two shared cores: one torch thread is fastest
        TMPDIR=str(tmp / "tmp"), PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
        no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost",
    )
    if hold is not None:
        env[HOLD_ENV] = f"snippets:{hold}"
    log = tmp / log_name
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rollingdepth.frontends.app", "-c", str(TINY_CHECKPOINT), "--dtype", "fp32",
             "--port", str(port), "--max-frames", str(MAX_FRAMES), "--max-upload-mb", str(MAX_UPLOAD_MB),
             "--max-res", "256", "--results-ttl", "1h"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    return proc, f"http://127.0.0.1:{port}", log


def _wait_until_served(proc, url: str, log: Path, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the app exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"the app did not start in time:\n{log.read_text()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def app(tmp_path_factory, request):
    require_module("gradio")
    tmp = tmp_path_factory.mktemp("app")
    (tmp / "tmp").mkdir()
    proc, url, log = _start_app(tmp, "app.log", hold=tmp / "hold")
    request.getfixturevalue("reference")  # computed in this process while the app starts
    _wait_until_served(proc, url, log)
    yield App(proc, url, log, tmp)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


class Browsers:
    """Headless Chromium windows, started when first asked for, closed at the end."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.open: dict[str, object] = {}

    def __call__(self, name: str):
        if name in self.open:
            return self.open[name]
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        downloads = self.tmp / f"downloads-{name}"
        downloads.mkdir()
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1400,1450", "--no-proxy-server", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio"):
            options.add_argument(arg)
        options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                                  "download.prompt_for_download": False})
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # the page's requests
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(60)
        driver.downloads = downloads
        self.open[name] = driver
        return driver

    def close(self):
        for driver in self.open.values():
            driver.quit()
        self.open.clear()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    require_module("gradio")
    require_module("selenium")
    require(bool(CHROMIUM and CHROMEDRIVER), "Debian's chromium and chromium-driver are not installed")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch a browser or a driver
    browsers = Browsers(tmp_path_factory.mktemp("browsers"))
    yield browsers
    browsers.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """run-video's prediction for the sample clip with the page's small settings (in-process)."""
    import torch
    from typer.testing import CliRunner

    from rollingdepth.frontends import run_video as cli

    out = tmp_path_factory.mktemp("run-video")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(cli.app, [str(SAMPLE), "-c", str(TINY_CHECKPOINT), "--dtype", "fp32", "-q",
                                              *SMALL_CLI, "-o", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return np.load(out / "synthetic_scene_pred.npy")


# ---------------------------------------------------------------------------- page helpers
def _wait(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _open(driver, app: App):
    from selenium.webdriver.common.by import By

    driver.get(app.url + "/")
    for css in ("#rd-upload input[type=file]", "#rd-dilations textarea, #rd-dilations input", "#rd-frames input",
                "#rd-res input[type=number]", "#rd-run"):
        _wait(lambda: driver.find_elements(By.CSS_SELECTOR, css), 60, f"the page ({css})")


def _text(driver, elem_id: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.ID, elem_id)
    return found[0].text.strip() if found else ""


def _upload(driver, path: Path):
    from selenium.webdriver.common.by import By

    _clear_upload(driver)
    driver.find_element(By.CSS_SELECTOR, "#rd-upload input[type=file]").send_keys(str(path))
    _wait(lambda: path.stem in _text(driver, "rd-upload"), 30, f"the upload of {path.name}")


def _clear_upload(driver):
    """Remove the file in the upload box (the box offers a new file input once empty)."""
    from selenium.webdriver.common.by import By

    if not driver.find_elements(By.CSS_SELECTOR, "#rd-upload input[type=file]"):
        driver.find_element(By.CSS_SELECTOR, "#rd-upload button[aria-label=Clear]").click()
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#rd-upload input[type=file]"), 30, "an empty upload box")


def _set(driver, css: str, value):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(By.CSS_SELECTOR, css)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(value))
    field.send_keys(Keys.TAB)
    driver.execute_script("document.activeElement && document.activeElement.blur()")  # no dropdown left open


def _settings(driver, res=SMALL["res"], dilations=SMALL["dilations"], frames=SMALL["frames"]):
    _set(driver, "#rd-res input[type=number]", res)
    _set(driver, "#rd-dilations textarea, #rd-dilations input", dilations)
    _set(driver, "#rd-frames input", frames)


def _run(driver):
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "rd-run").click()


def _finished(driver) -> str:
    status = _text(driver, "rd-status")
    return status if status.startswith(("Done", "Error", "Cancelled")) else ""


@contextmanager
def _holding(hold: Path):
    """Jobs are held at their snippets while inside (app.HOLD_ENV); yields the file a held job writes."""
    held = Path(f"{hold}.held")
    hold.write_text("")
    try:
        yield held
    finally:
        hold.unlink(missing_ok=True)
        held.unlink(missing_ok=True)


STATUS_CHANGE_S = 10  # how long a new job's status may take to replace an earlier job's on the page


def _run_and_watch(driver, timeout=120, bars: list | None = None, hold: Path | None = None) -> tuple[str, set[str]]:
    """Press Run; return the final status and the stages the progress bar showed.
    ``bars`` gets, at each look, the panes (element ids) of the progress bars the page shows.
    With ``hold`` (the app's hold file, app.HOLD_ENV) the job is held at its snippets until the
    page shows a stage, so a fast machine cannot finish the job between two looks."""
    stages = set()

    def look() -> str:
        page = driver.find_element("css selector", "body").text
        found = [m.group(1) for m in STAGE.finditer(page)]
        stages.update(found)
        if bars is not None:
            bars.append(driver.execute_script(BAR_PANES))
        return page

    before = _finished(driver)  # an earlier job's status, still shown until this job's first update
    if hold is not None:
        with _holding(hold) as held:
            _run(driver)
            _wait(held.exists, timeout, "the job held at its snippets")
            _wait(lambda: STAGE.search(look()) and (bars is None or bars[-1]), 60, "the progress bar to show a stage")
    else:
        _run(driver)
    changed = time.time() + STATUS_CHANGE_S
    while before and _finished(driver) == before and time.time() < changed:  # not the earlier job's (a status
        time.sleep(0.05)  # the same as the earlier one's is taken after STATUS_CHANGE_S)
    deadline = time.time() + timeout
    while time.time() < deadline:
        look()
        status = _finished(driver)
        if status:
            return status, stages
        time.sleep(0.15)
    raise AssertionError(f"no result after {timeout} s; page shows: {driver.find_element('css selector', 'body').text[:500]}")


ESTIMATE = re.compile(r"^Estimated (?P<time>\d+ s|\d+ min|\d+ h \d+ min) on cpu \(fp32\) for (?P<frames>\d+) frames "
                      r"at (?P<w>\d+)x(?P<h>\d+)")


def _estimate_of(driver, frames: int) -> dict | None:
    """The page's estimate once it is for ``frames`` frames: its line, width and seconds; else None."""
    line = _text(driver, "rd-estimate")
    found = ESTIMATE.match(line)
    if not found or int(found.group("frames")) != frames:
        return None
    numbers = [int(x) for x in re.findall(r"\d+", found.group("time"))]
    unit = 3600 if " h " in found.group("time") else 60 if "min" in found.group("time") else 1
    seconds = numbers[0] * unit + (numbers[1] * 60 if len(numbers) == 2 else 0)
    return {"line": line, "w": int(found.group("w")), "seconds": seconds}


def _run_video_estimate(frames: int) -> str:
    """The line run-video says before the sample clip's run with the page's small settings, in this
    process (the app's throughput, measured with one torch thread, is in the same cache)."""
    import torch

    from rollingdepth.runtime.estimate import estimate_run
    from rollingdepth.runtime.loading import load_pipeline
    from rollingdepth.runtime.run_config import RunConfig

    cfg = RunConfig.build("fast", dict(processing_res=SMALL["res"], dilations=[1, 4], max_frames=frames, dtype="fp32"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = load_pipeline(str(TINY_CHECKPOINT), "fp32", "cpu")
        return estimate_run(pipe, [(frames, (192, 320))], cfg.method_settings())[0]
    finally:
        torch.set_num_threads(threads)


def _download_links(driver) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    links = {}
    for a in driver.find_elements(By.CSS_SELECTOR, "#rd-downloads a[href]"):
        href = a.get_attribute("href")
        links[urllib.parse.unquote(href.rsplit("/", 1)[-1])] = href
    return links


def _choose(driver, elem_id: str, value: str):
    """Pick ``value`` in a dropdown as a person does: open it, click the option."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def pick() -> bool:
        try:
            for option in driver.find_elements(By.CSS_SELECTOR, "[data-testid=dropdown-option]"):
                if option.is_displayed() and option.get_attribute("aria-label") == value:
                    option.click()
                    return True
        except StaleElementReferenceException:  # the list was drawn again meanwhile
            pass
        return False

    field = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input")
    field.click()
    _wait(pick, 10, f"the option {value}")
    _wait(lambda: field.get_attribute("value") == value, 10, f"{value} chosen")


def _image_src(driver, elem_id: str) -> str | None:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
    return found[0].get_attribute("src") if found else None


def _image_at(url: str) -> np.ndarray:
    """The picture the page shows, as uint8 RGB."""
    code, data = _get(url)
    assert code == 200, url
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# ---------------------------------------------------------------------------- browser tests


def test_sample_clip_run_matches_run_video(app, browser, reference, tmp_path):
    """Upload the sample clip, run with small settings, watch the progress, get the same depth as run-video."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from rollingdepth.io.depth_video import read_depth_video

    page = browser("a")
    _open(page, app)
    # On a CPU the page starts at a resolution whose run of the sample clip takes minutes, and
    # says so with the estimate run-video prints (the app's --max-res 256 is the fast preset's here).
    first = int(page.find_element(By.CSS_SELECTOR, "#rd-res input[type=number]").get_attribute("value"))
    assert 16 <= first < 256, first
    _upload(page, SAMPLE)
    said = _wait(lambda: _estimate_of(page, 72), 60, "the estimate for the sample clip")
    assert said["w"] == first and said["seconds"] <= 180, said
    _settings(page)
    line = _wait(lambda: _estimate_of(page, 12), 60, "the estimate for the small settings")["line"]
    assert "for 12 frames at 32x19" in line and line == _run_video_estimate(12), line
    toasts = [e.text for e in page.find_elements(By.CSS_SELECTOR, "[data-testid=toast-body]") if e.is_displayed()]
    assert not toasts, toasts  # typing the settings raised no message on the way
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.save_screenshot(str(IMAGES / "app-before.png"))

    bars = []
    status, stages = _run_and_watch(page, bars=bars, hold=app.tmp / "hold")
    assert status.startswith("Done: synthetic_scene.mp4, 12 frames at 32x19"), status
    assert stages & {"encode", "snippets d=1", "snippets d=3", "coalign", "merge", "write"}, stages
    # One progress bar, on the video's pane, never two
    assert ["rd-video"] in bars and all(panes in ([], ["rd-video"]) for panes in bars), bars

    # The input and the coloured depth side by side, as a video the browser plays.
    video = _wait(lambda: page.execute_script(
        "const v = document.querySelector('#rd-video video');"
        "return v && v.readyState >= 1 && v.duration > 0 ? [v.duration, v.videoWidth, v.videoHeight] : null;"),
        30, "a playable result video")
    assert video[1] == 2 * 32 + 16 and video[2] in (19, 20)  # input | gap | depth, padded to even
    # Its label stands above it: nothing of the label is over the video.
    label, shown = page.execute_script(
        "const r = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };"
        "return [r(document.querySelector('#rd-video-label')), r(document.querySelector('#rd-video video'))];")
    assert "Input and depth" in _text(page, "rd-video-label") and label[3] <= shown[1], (label, shown)
    assert not [e for e in page.find_elements(By.CSS_SELECTOR, "#rd-video [data-testid=block-label]") if e.is_displayed()]

    # One frame with its colour bar; the slider moves to another frame.
    def frame_image():
        found = page.find_elements(By.CSS_SELECTOR, "#rd-frame-image img")
        return found[0].get_attribute("src") if found else None

    first_view = _wait(frame_image, 30, "the frame view")
    slider = page.find_element(By.CSS_SELECTOR, "#rd-frame input[type=range]")
    assert (slider.get_attribute("min"), slider.get_attribute("max")) == ("1", "12")  # as the title counts: 1 of 12
    slider.send_keys(Keys.END)
    _wait(lambda: page.find_element(By.CSS_SELECTOR, "#rd-frame input[type=number]").get_attribute("value") == "12",
          10, "the slider at the last frame")
    _wait(lambda: (src := frame_image()) and src != first_view, 30, "the view of another frame")
    page.save_screenshot(str(IMAGES / "app-result.png"))

    # Downloads: the prediction, the 16-bit PNGs and depth video, the colour videos, the run report.
    links = _wait(lambda: _download_links(page) if len(_download_links(page)) == 6 else None, 30, "six downloads")
    assert sorted(links) == sorted(["synthetic_scene_pred.npy", "synthetic_scene_depth16.zip",
                                    "synthetic_scene_depth16.mkv",
                                    "synthetic_scene_Spectral_r.mp4", "synthetic_scene_rgbd.mp4",
                                    "synthetic_scene_run.json"])
    page.find_element(By.XPATH, "//*[@id='rd-downloads']//a[contains(@href, '_pred.npy')]").click()
    npy = page.downloads / "synthetic_scene_pred.npy"
    _wait(lambda: npy.exists() and not list(page.downloads.glob("*.crdownload")), 30, "the downloaded npy")
    depth = np.load(npy)
    assert depth.shape == reference.shape == (12, 19, 32) and depth.dtype == np.float32
    assert np.abs(depth - reference).max() <= 1e-5

    code, data = _get(links["synthetic_scene_depth16.zip"])
    assert code == 200
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = sorted(zf.namelist())
        assert len(names) == 12 and names[0] == "synthetic_scene_depth16/000000.png"
        png = cv2.imdecode(np.frombuffer(zf.read(names[0]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == (19, 32)
    code, data = _get(links["synthetic_scene_depth16.mkv"])  # the same integers as a lossless video
    assert code == 200
    (tmp_path / "depth16.mkv").write_bytes(data)
    first_frame = next(read_depth_video(tmp_path / "depth16.mkv"))
    assert first_frame.dtype == np.uint16 and np.array_equal(first_frame, png)
    code, data = _get(links["synthetic_scene_run.json"])
    report = json.loads(data)
    assert code == 200 and report["frames"] == 12 and report["settings"]["processing_res"] == 32
    # The page loads everything from the app: no fonts, scripts or analytics from elsewhere.
    requested = set()
    for entry in page.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requested.add(message["params"]["request"]["url"])
    assert any(u.startswith(app.url) for u in requested)
    outside = sorted(u for u in requested if not u.startswith((app.url, "data:", "blob:")))
    assert not outside, outside


def test_stereo_run_offers_the_video_and_an_anaglyph_preview(app, browser, reference, tmp_path):
    """Choose a stereo layout and strength, run: the stereo video is among the downloads (its name
    from the declaration) and a still red-cyan anaglyph of the frame the slider shows, rendered
    from the input frame and the run's prediction as the stereo videos are; moving the strength
    redraws it without a new job."""
    from types import SimpleNamespace

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from rollingdepth.frontends.app import anaglyph_preview
    from rollingdepth.io.output_formats import output_format
    from rollingdepth.io.stereo import shot_ranges
    from rollingdepth.io.video_io import load_source

    page = browser("a")
    _open(page, app)
    assert not _image_src(page, "rd-stereo-image")  # no preview before a stereo run
    _upload(page, SAMPLE)
    _settings(page)
    _choose(page, "rd-stereo", "half-sbs")
    _set(page, "#rd-strength input[type=number]", 5)
    status, _ = _run_and_watch(page)
    assert status.startswith("Done: synthetic_scene.mp4, 12 frames at 32x19"), status

    (name,) = output_format("stereo").names("synthetic_scene", SimpleNamespace(save_stereo=["half-sbs"]))
    links = _wait(lambda: found if name in (found := _download_links(page)) else None, 30, f"the download {name}")
    assert name == "synthetic_scene_3D_hsbs_LR.mp4" and len(links) == 7, sorted(links)
    code, data = _get(links[name])
    assert code == 200
    (tmp_path / name).write_bytes(data)
    video = load_source(tmp_path / name)
    assert video.frame_count == 12 and tuple(video.size) == (192, 320)  # half-sbs: the input's size

    # The preview: frame 1 of the input with its depth, as an anaglyph at strength 5
    frames = load_source(SAMPLE).read(0, 12)
    near_range = shot_ranges(reference, (0,))[0]

    def expected(frame: int, strength: float) -> np.ndarray:
        return anaglyph_preview(frames[frame], reference[frame], strength, near_range, 0.5)

    first = _wait(lambda: _image_src(page, "rd-stereo-image"), 30, "the stereo preview")
    shown = _image_at(first)
    assert shown.shape == (192, 320, 3)
    assert np.abs(shown.astype(int) - expected(0, 5)).mean() < 3  # the kept frame is a JPEG
    assert np.abs(shown.astype(int) - expected(0, 0)).mean() > 2 * np.abs(shown.astype(int) - expected(0, 5)).mean()

    # The frame slider's frame
    page.find_element(By.CSS_SELECTOR, "#rd-frame input[type=range]").send_keys(Keys.END)
    last = _wait(lambda: (src := _image_src(page, "rd-stereo-image")) != first and src, 30, "the preview of frame 12")
    assert np.abs(_image_at(last).astype(int) - expected(11, 5)).mean() < 3
    page.execute_script("document.querySelector('#rd-stereo-image').scrollIntoView({block: 'center'})")
    page.save_screenshot(str(IMAGES / "app-stereo.png"))

    # Another strength: the same frame drawn again, no job
    jobs = len(re.findall(r"job \d+ started", app.log_text()))
    _set(page, "#rd-strength input[type=number]", 0)
    flat = _wait(lambda: (src := _image_src(page, "rd-stereo-image")) not in (first, last) and src, 30,
                 "the preview at strength 0")
    flat_image = _image_at(flat)
    assert np.abs(flat_image.astype(int) - expected(11, 0)).mean() < 3
    assert not np.array_equal(flat_image, _image_at(last))
    assert len(re.findall(r"job \d+ started", app.log_text())) == jobs


def test_nothing_outside_the_app_folder_can_be_downloaded(app, tmp_path):
    """The app serves its users' files and nothing else: absolute paths and .. do not get out.
    The way in is a file uploaded through Gradio's upload route (no earlier test needed)."""
    import httpx

    mine = tmp_path / "mine.npy"
    np.save(mine, np.arange(6, dtype=np.float32))
    with open(mine, "rb") as f:
        response = httpx.post(f"{app.url}/gradio_api/upload", files={"files": ("mine.npy", f)}, timeout=30)
    assert response.status_code == 200, response.text
    [uploaded] = response.json()
    code, data = _get(f"{app.url}/gradio_api/file={uploaded}")
    assert code == 200 and data == mine.read_bytes()  # the way in works

    secret = app.tmp / "secret.txt"
    secret.write_text("not for the browser")
    root = app.root
    prefix = f"{app.url}/gradio_api/file="
    attempts = [
        str(secret),
        f"{root}/../secret.txt",
        f"{root}/users/../../secret.txt",
        f"{root}/users/%2e%2e/%2e%2e/secret.txt",
        f"{root}%2F..%2Fsecret.txt",
        f"{root}/..%5c..%5csecret.txt",
        "/etc/passwd",
        f"{root}/../../../../../../etc/passwd",
        str(REPO / "pyproject.toml"),
        str(TINY_CHECKPOINT / "model_index.json"),
        str(SAMPLE),  # the page offers a copy of it, inside its own folder
        "../../../../etc/passwd",
    ]
    for path in attempts:
        for url in (prefix + path, prefix + urllib.parse.quote(path, safe="")):
            code, data = _get(url)
            assert code in (400, 403, 404), (url, code)
            assert b"not for the browser" not in data and b"root:" not in data, url
    # The paths route of older Gradio versions, the same way.
    code, data = _get(f"{app.url}/file={secret}")
    assert code in (400, 403, 404) and b"not for the browser" not in data


def test_bad_uploads_show_one_message_and_the_next_run_works(app, browser, tmp_path):
    from selenium.webdriver.common.by import By

    import imageio_ffmpeg

    text = tmp_path / "notes.mp4"
    text.write_text("this is a text file, not a video\n")
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(SAMPLE.read_bytes()[:30000])
    empty = tmp_path / "empty.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "color=c=red:s=32x32:d=1", "-frames:v", "0", str(empty)], check=True)
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(int((MAX_UPLOAD_MB + 0.5) * 2**20)))
    long = SAMPLE  # 72 frames; the app takes at most MAX_FRAMES

    page = browser("b")
    _open(page, app)
    runs_before = app.runs()
    cases = [
        (text, {}, "notes.mp4: not a readable video (corrupt, truncated or not a video file)"),
        (truncated, {}, "cut.mp4: the video is truncated or damaged: only"),
        (empty, {}, "empty.mp4: the file has no video stream: no frames to process"),
        (long, {"frames": 0}, f"synthetic_scene.mp4: 72 frames; this page processes at most {MAX_FRAMES}"),
    ]
    for path, changes, expected in cases:
        _upload(page, path)
        _settings(page, **{**SMALL, **changes})
        status, _ = _run_and_watch(page, timeout=60)
        assert status.startswith("Error: ") and expected in status, status
        assert "\n" not in status and "Traceback" not in status and "rollingdepth-app-" not in status, status
        assert app.runs() == runs_before  # a failed job leaves no folder behind

    # Over the upload limit: the browser is told at once and nothing reaches the server.
    _clear_upload(page)
    page.find_element(By.CSS_SELECTOR, "#rd-upload input[type=file]").send_keys(str(big))
    toast = _wait(lambda: " ".join(e.text for e in page.find_elements(By.CSS_SELECTOR, "[data-testid=toast-body]")),
                  30, "the message about the size")
    assert "exceed the maximum allowed size" in toast and "big.mp4" in toast, toast
    import httpx

    refused = httpx.post(f"{app.url}/gradio_api/upload", files={"files": ("big.mp4", big.read_bytes())}, timeout=30)
    assert refused.status_code == 413, refused.status_code

    # And the next request is served: the sample clip from its button.
    _clear_upload(page)
    page.find_element(By.ID, "rd-sample").click()
    _wait(lambda: "synthetic_scene" in _text(page, "rd-upload"), 30, "the sample clip in the upload box")
    _settings(page)
    status, _ = _run_and_watch(page)
    assert status.startswith("Done: synthetic_scene.mp4, 12 frames"), status
    assert len(app.runs()) == len(runs_before) + 1


def _frames_zip(path: Path, count: int) -> Path:
    """The sample clip's first frames as PNGs in a zip, inside a folder as people zip them."""
    from rollingdepth.io.video_io import load_source

    frames = load_source(SAMPLE).read(0, count)
    with zipfile.ZipFile(path, "w") as zf:
        for i, frame in enumerate(frames):
            zf.writestr(f"clip/{i:04d}.png", cv2.imencode(".png", frame[..., ::-1])[1].tobytes())
    return path


def test_two_browsers_at_once_run_one_after_the_other(app, browser, reference, tmp_path):
    """One job at a time: the second waits in the queue. The second person uploads a zip of frames.
    The first job is held at its snippets (app.HOLD_ENV) until the second page shows its place in
    the queue, so the test does not depend on how fast the first job runs."""
    hold = app.tmp / "hold"
    pages = [browser("a"), browser("b")]
    uploads = [SAMPLE, _frames_zip(tmp_path / "clip_frames.zip", SMALL["frames"])]
    for page, upload in zip(pages, uploads):
        _open(page, app)
        _upload(page, upload)
        _settings(page)
    log_start = len(app.log_text())
    with _holding(hold) as held:
        _run(pages[0])
        _wait(held.exists, 120, "the first job held at its snippets")
        _run(pages[1])
        _wait(lambda: QUEUE.search(pages[1].find_element("css selector", "body").text), 60,
              "the second page to show its place in the queue")
        assert not _finished(pages[1]), _finished(pages[1])
        # The second job has not started while the first is held.
        assert len(re.findall(r"job \d+ started", app.log_text()[log_start:])) == 1, app.log_text()[log_start:]
        hold.unlink()
        statuses = [_wait(lambda p=p: _finished(p), 180, "both jobs to finish") for p in pages]
    assert statuses[0].startswith("Done: synthetic_scene.mp4, 12 frames at 32x19"), statuses
    assert statuses[1].startswith("Done: clip_frames.zip, 12 frames at 32x19"), statuses
    # One job at a time on the device: the second starts after the first finished.
    events = re.findall(r"job (\d+) (started|ended)", app.log_text()[log_start:])
    assert [kind for _, kind in events] == ["started", "ended", "started", "ended"], events
    assert events[0][0] == events[1][0] and events[2][0] == events[3][0] != events[0][0]
    # Each person has a folder of their own.
    links = [_download_links(pages[0])["synthetic_scene_pred.npy"], _download_links(pages[1])["clip_frames_pred.npy"]]
    folders = {Path(urllib.parse.unquote(link.split("file=", 1)[1])).parent.parent for link in links}
    assert len(folders) == 2
    # The frames of the zip are the frames of the video: the same depth.
    code, data = _get(links[1])
    assert code == 200
    assert np.abs(np.load(io.BytesIO(data)) - reference).max() <= 1e-5


def test_cancel_stops_the_job_and_leaves_no_files(app, browser):
    """The job is held inside its progress report at its snippets (app.HOLD_ENV), as in a long
    batch, and Cancel is pressed there: the page says "Cancelling" while the job still runs and
    "Cancelled" only once it has stopped; released, the worker stops within a few seconds,
    nothing of the job is left, and the next job starts at once and runs to its end."""
    from selenium.webdriver.common.by import By

    hold = app.tmp / "hold"
    page = browser("a")
    _open(page, app)
    _upload(page, SAMPLE)
    _settings(page)
    runs_before = app.runs()
    log_start = len(app.log_text())
    ended = re.compile(r"job \d+ ended")
    with _holding(hold) as held:
        _run(page)
        _wait(held.exists, 120, "the job held at its snippets")
        assert len(app.runs()) == len(runs_before) + 1  # its folder exists while it runs
        page.find_element(By.ID, "rd-cancel").click()
        _wait(lambda: _text(page, "rd-status").startswith("Cancelling"), 30, "the page to say it is cancelling")
        time.sleep(1)
        assert _text(page, "rd-status").startswith("Cancelling"), _text(page, "rd-status")
        assert not ended.search(app.log_text()[log_start:])  # the job is still held: not "Cancelled" yet
        hold.unlink()
        released = time.time()
        _wait(lambda: ended.search(app.log_text()[log_start:]), 10, "the worker to stop")
        stopped = time.time() - released
        status = _wait(lambda: _finished(page), 30, "the page to say it cancelled")
    assert stopped < 5, stopped
    assert status == "Cancelled: the job stopped and its files were removed.", status
    log = app.log_text()[log_start:]
    assert re.search(r"job \d+ cancelled", log), log
    assert app.runs() == runs_before
    leftovers = [p for p in app.root.rglob("*") if "-work-" in p.name or ".partial" in p.name]
    assert not leftovers, leftovers

    # The worker is free: the next job starts at once.
    log_start = len(app.log_text())
    pressed = time.time()
    _run(page)
    _wait(lambda: re.search(r"job \d+ started", app.log_text()[log_start:]), 10, "the next job to start")
    assert time.time() - pressed < 10
    status = _wait(lambda: _finished(page) if _finished(page).startswith("Done") else "", 120, "the next job's result")
    assert status.startswith("Done: synthetic_scene.mp4, 12 frames"), status


def test_ctrl_c_stops_the_page_cleanly(tmp_path):
    """SIGINT (Ctrl-C) of ``python -m rollingdepth.frontends.app``: exit 0, no traceback, every
    file removed; the start says where it serves and no Gradio hint about public links."""
    require_module("gradio")
    (tmp_path / "tmp").mkdir()
    proc, url, log = _start_app(tmp_path, "sigint.log")
    try:
        _wait_until_served(proc, url, log)
        _wait(lambda: "serving on" in log.read_text(), 30, "the app to say where it serves")
        (root,) = (tmp_path / "tmp").glob("rollingdepth-app-*")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text and "share=True" not in text and "public link" not in text.lower(), text
    assert f"serving on {url}/" in text and "stopped; removed" in text, text
    assert not root.exists()


def test_stopping_the_app_removes_every_file(app, browser):
    root = app.root
    assert any(root.rglob("*_pred.npy"))
    browser.close()  # the pages' open connections would hold up the server's shutdown
    started = time.time()
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(60) == 0
    assert time.time() - started < 30
    assert not root.exists()
    assert "stopped; removed" in app.log_text()
