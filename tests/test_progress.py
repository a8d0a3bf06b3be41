"""Progress events and their renderers: fake clocks for the renderers, then run-video writing to
files (plain lines), in JSON, and to a pseudo-terminal (live bars)."""

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rollingdepth.frontends.progress import BarRenderer, JsonRenderer, LineRenderer, Reporter, make_renderer, only_errors
from rollingdepth.runtime.stages import Stage

from .conftest import TINY_CHECKPOINT, make_clip
from .test_run_video import run, write_clip

ARGS = ["-c", str(TINY_CHECKPOINT), "--dtype", "fp32", "--res", "32", "-d", "1", "--no-save-sbs", "--cmap", "Greys_r"]


class Clock:
    """A clock that moves only when told."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def lines_reporter(log_every: float, videos: int = 2):
    clock, stream = Clock(), io.StringIO()
    renderer = LineRenderer(stream, log_every=log_every, clock=clock, localtime=time.gmtime)
    return Reporter(renderer, videos=videos, clock=clock, wall=clock), clock, stream


def json_reporter(log_every: float, videos: int = 2, quiet: bool = False):
    clock, stream = Clock(), io.StringIO()
    renderer = JsonRenderer(stream, log_every=log_every, clock=clock)
    return Reporter(only_errors(renderer) if quiet else renderer, videos=videos, clock=clock, wall=clock), clock, stream


def parse(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


# ----------------------------------------------------------------------------- renderers, fake clock
def test_a_stage_is_typed_and_shown_as_text():
    assert str(Stage("snippets", dilation=10)) == "snippets d=10"
    assert str(Stage("refine decode")) == "refine decode"
    assert str(Stage("snippets", dilation=10).within(3, 41, 2, 5)) == "shot 3/41 segment 2/5 snippets d=10"
    assert str(Stage("merge").within(1, 2)) == "shot 1/2 merge"


def test_a_unit_of_a_video_is_named_in_lines_and_json():
    """A video run as several units (shots, segments): the library's stages carry the unit as
    fields; JSON events give them as fields, lines keep the unit in the stage's name."""
    report, clock, stream = json_reporter(log_every=0)
    report.update("a.mp4", Stage("snippets", dilation=10).within(3, 41, 2, 5), 4, 10)
    report.end_stage("a.mp4")
    start = parse(stream.getvalue())[0]
    assert (start["stage"], start["dilation"], start["shot"], start["shots"], start["segment"], start["segments"]) == (
        "snippets", 10, 3, 41, 2, 5)
    report, clock, stream = lines_reporter(log_every=0)
    report.update("a.mp4", Stage("encode").within(2, 3), 1, 8)
    assert "a.mp4: shot 2/3 encode started, 1/8 frames" in stream.getvalue()


def test_lines_start_at_most_one_every_log_every_and_end():
    report, clock, stream = lines_reporter(log_every=3)
    report.video_start("clips/a.mp4")
    for done in range(1, 11):  # one frame a second
        clock.t += 1
        report.update("clips/a.mp4", "encode", done, 10)
    clock.t += 2
    report.update("clips/a.mp4", Stage("snippets", dilation=10), 4, 8)  # encode ended when it last reported (t = 10)
    clock.t += 2
    report.end_stage("clips/a.mp4")
    clock.t += 6
    report.video_done("clips/a.mp4", frames=10)
    assert stream.getvalue().splitlines() == [
        "00:00:00 a.mp4: started, video 1/2",
        "00:00:01 a.mp4: encode started, 1/10 frames",
        "00:00:04 a.mp4: encode 4/10 frames (40%), 1.00 frames/s, elapsed 4.0s, ETA 6.0s",
        "00:00:07 a.mp4: encode 7/10 frames (70%), 1.00 frames/s, elapsed 7.0s, ETA 3.0s",
        "00:00:10 a.mp4: encode 10/10 frames (100%), 1.00 frames/s, elapsed 10.0s, ETA 0.0s",
        "00:00:10 a.mp4: encode done, 10/10 frames in 10.0s, 1.00 frames/s",
        "00:00:12 a.mp4: snippets d=10 started, 4/8 snippets",
        "00:00:14 a.mp4: snippets d=10 done, 4/8 snippets in 4.0s, 1.00 snippets/s",
        "00:00:20 a.mp4: 10 frames predicted in 20.0 s, 2.000 s/frame (1/2 finished)",
    ]


def test_lines_are_throttled_per_stage_of_each_video():
    """a's outputs are written while b is predicted: each stage has its own period."""
    report, clock, stream = lines_reporter(log_every=5)
    report.video_start("a.mp4")
    report.video_start("b.mp4")
    for step in range(1, 13):
        clock.t = step
        report.update("a.mp4", "write", step, 12)
        report.update("b.mp4", "encode", step, 12)
    text = stream.getvalue()
    for head in ("a.mp4: write", "b.mp4: encode"):
        shown = [int(m) for m in re.findall(rf"{head} (\d+)/12 ", text)]
        assert shown == [6, 11], (head, text)  # started at 1, then at least 5 s apart


def test_json_events_schema_and_counts():
    report, clock, stream = json_reporter(log_every=0)
    report.video_start("clips/a.mp4")
    for done in (4, 8, 10):
        clock.t += 2
        report.update("clips/a.mp4", Stage("snippets", dilation=10), done, 10)
    clock.t += 1
    report.update("clips/a.mp4", "coalign", 0, 1)
    clock.t += 1
    report.update("clips/a.mp4", "coalign", 1, 1)
    report.end_stage("clips/a.mp4")
    report.video_done("clips/a.mp4", frames=20, seconds=9.0, outputs=["a_pred.npy", "a_run.json"])
    report.video_start("clips/b.mp4")
    clock.t += 1
    report.update("clips/b.mp4", "encode", 2, 5)
    report.video_failed("clips/b.mp4", "clips/b.mp4: not a readable video")
    events = parse(stream.getvalue())
    assert [(e["event"], e.get("stage"), e.get("phase")) for e in events] == [
        ("video_start", None, None),
        ("stage", "snippets", "start"), ("stage", "snippets", "progress"), ("stage", "snippets", "progress"),
        ("stage", "snippets", "end"),
        ("stage", "coalign", "start"), ("stage", "coalign", "progress"), ("stage", "coalign", "end"),
        ("video_done", None, None),
        ("video_start", None, None), ("stage", "encode", "start"),
        ("video_failed", None, None),  # its open stage has no end
    ]
    progress = events[2]
    assert progress == {"event": "stage", "video": "clips/a.mp4", "stage": "snippets", "phase": "progress", "done": 8,
                        "total": 10, "elapsed_s": 4.0, "rate": 2.0, "eta_s": 1.0, "dilation": 10, "unit": "snippets",
                        "time": 4.0}
    end = events[4]
    assert end["done"] == end["total"] == 10 and end["time"] == 6.0 and end["elapsed_s"] == 6.0 and "eta_s" not in end
    assert events[8] == {"event": "video_done", "video": "clips/a.mp4", "frames": 20, "seconds": 9.0,
                         "s_per_frame": 0.45, "outputs": ["a_pred.npy", "a_run.json"], "finished": 1, "videos": 2,
                         "time": 8.0}
    assert events[-1] == {"event": "video_failed", "video": "clips/b.mp4", "error": "clips/b.mp4: not a readable video",
                          "seconds": 1.0, "finished": 2, "videos": 2, "time": 9.0}


def test_json_summary_and_messages():
    from rollingdepth.runtime.outputs import VideoResult

    report, clock, stream = json_reporter(log_every=30)
    report.warning("batch halved")
    report.rank = 1
    report.error("out of memory", video="a.mp4")
    report.summary([VideoResult(name="a.mp4", frames=4, seconds=2.0, outputs=["a_run.json"]),
                    VideoResult(name="b.mp4", error="boom"), VideoResult(name="c.mp4", skipped=True)], seconds=12.5)
    warning, error, summary = parse(stream.getvalue())
    assert warning == {"event": "message", "level": "warning", "text": "batch halved", "time": 0.0}
    assert error == {"event": "message", "rank": 1, "level": "error", "text": "out of memory", "video": "a.mp4",
                     "time": 0.0}
    assert summary == {"event": "summary", "rank": 1, "videos": 3, "done": 1, "failed": 1, "skipped": 1,
                       "seconds": 12.5, "interrupted": False, "time": 0.0, "results": [
                           {"video": "a.mp4", "status": "done", "frames": 4, "seconds": 2.0, "outputs": ["a_run.json"]},
                           {"video": "b.mp4", "status": "failed", "error": "boom"},
                           {"video": "c.mp4", "status": "skipped"}]}


def test_rate_restarts_when_a_stage_counts_in_other_units():
    """The writing counts frame writes, then 1/1 when the run report is written: no rate
    across the two, no ETA in the end event."""
    report, clock, stream = json_reporter(log_every=0)
    report.video_start("a.mp4")
    for done in (3, 6, 9):
        clock.t += 1
        report.update("a.mp4", "write", done, 10)
    clock.t += 1
    report.update("a.mp4", "write", 1, 1)
    report.end_stage("a.mp4")
    events = [e for e in parse(stream.getvalue()) if e["event"] == "stage"]
    assert events[2]["rate"] == 3.0 and events[2]["eta_s"] == pytest.approx(0.3)
    assert "rate" not in events[-1] and "eta_s" not in events[-1] and events[-1]["done"] == events[-1]["total"] == 1


def test_quiet_passes_errors_only():
    report, clock, stream = lines_reporter(log_every=0)
    report.sink = only_errors(report.sink)
    report.info("loading checkpoint x")
    report.video_start("clips/b.mp4")
    report.update("clips/b.mp4", "encode", 1, 2)
    report.video_failed("clips/b.mp4", "RuntimeError: boom")
    report.video_done("clips/c.mp4", frames=3, seconds=1.0)
    report.error("Interrupted.")
    assert stream.getvalue().splitlines() == ["Error: b.mp4: RuntimeError: boom", "Error: Interrupted."]
    report, clock, stream = json_reporter(log_every=0, quiet=True)
    report.update("a.mp4", "encode", 1, 2)
    report.video_failed("a.mp4", "a.mp4: boom")
    assert [e["event"] for e in parse(stream.getvalue())] == ["video_failed"]


def test_make_renderer_chooses_by_terminal_and_option():
    from rich.console import Console

    console = Console(file=io.StringIO())
    assert isinstance(make_renderer("auto", False, console, is_terminal=True), BarRenderer)
    assert isinstance(make_renderer("auto", False, console, is_terminal=False), LineRenderer)
    assert isinstance(make_renderer("lines", False, console, is_terminal=True), LineRenderer)
    assert isinstance(make_renderer("json", False, console, is_terminal=True), JsonRenderer)
    assert isinstance(make_renderer("bar", False, console, is_terminal=False), BarRenderer)
    assert isinstance(make_renderer("bar", True, console).inner, LineRenderer)  # quiet: no bar, errors only
    with pytest.raises(ValueError, match="--progress"):
        make_renderer("fancy", False, console)
    with pytest.raises(ValueError, match="--log-every"):
        make_renderer("lines", False, console, log_every=-1)


def test_bar_renderer_follows_the_events():
    from rich.console import Console

    clock = Clock()
    bar = BarRenderer(Console(file=io.StringIO(), force_terminal=True, width=120), videos=2, clock=clock)
    report = Reporter(bar, videos=2, clock=clock, wall=clock)
    tasks = {t.id: t for t in bar.progress.tasks}
    report.video_start("a.mp4")
    report.update("a.mp4", Stage("snippets", dilation=10), 3, 8)
    stage = tasks[bar.stage]
    assert (stage.description, stage.completed, stage.total, stage.visible) == ("snippets d=10", 3, 8, True)
    report.end_stage("a.mp4")
    report.update("a.mp4", "write", 5, 20)  # a is written while b runs
    report.video_start("b.mp4")
    report.update("b.mp4", "encode", 2, 4)
    writing = tasks[bar.writing]
    assert writing.visible and writing.description.startswith("writing a.mp4") and writing.completed == 5
    assert tasks[bar.stage].description == "encode" and tasks[bar.stage].visible
    report.end_stage("a.mp4")
    report.video_done("a.mp4", frames=4)
    assert not writing.visible and tasks[bar.videos].completed == 1 and tasks[bar.stage].visible
    report.video_failed("b.mp4", "boom")
    assert not tasks[bar.stage].visible and tasks[bar.videos].completed == 2


# ----------------------------------------------------------------------------- run-video
@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("progress") / "a.mp4", make_clip(7, 24, 32, seed=3))


def test_a_log_file_gets_plain_progress_lines(tmp_path, clip):
    """run-video > log 2>&1 as a batch job runs it: a line per stage start and end, periodic lines,
    one line for the finished video; no terminal codes."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("TTY_COMPATIBLE", None)
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.run([sys.executable, "-m", "rollingdepth", clip, *ARGS, "--unet-batch-size", "1",
                               "--max-vae-bs", "1", "--log-every", "0.1", "-o", tmp_path / "o"],
                              stdout=stdout, stderr=stderr, env=env, timeout=300)
    log = err.read_text()
    assert proc.returncode == 0, log
    assert "\x1b" not in log and "━" not in log  # no bar, no colours
    stamp = r"\d\d:\d\d:\d\d a\.mp4: "
    started = re.findall(rf"^{stamp}(.+) started, \d+/\d+", log, re.M)
    ended = re.findall(rf"^{stamp}(.+) done, (\d+)/(\d+)", log, re.M)
    # fast: --shots auto, on a video of one unit: its cuts are looked for as it is encoded, not in a stage of their own
    assert started[:5] == ["encode", "snippets d=1", "coalign", "merge", "write"], log
    assert [name for name, _, _ in ended] == started
    assert all(done == total for _, done, total in ended), log
    periodic = re.findall(rf"^{stamp}\S+.* \d+/\d+ .*elapsed \S+", log, re.M)
    assert periodic, log
    done = re.findall(rf"^{stamp}7 frames predicted in ([\d.]+) s, ([\d.]+) s/frame \(1/1 finished\)$", log, re.M)
    assert len(done) == 1 and float(done[0][0]) > 0 and float(done[0][1]) == pytest.approx(float(done[0][0]) / 7, abs=0.01)
    assert "run-video summary" in out.read_text()


def test_progress_json_lines_parse_and_end_at_their_totals(tmp_path, capsys, clip):
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(clip.read_bytes())
    (folder / "broken.mp4").write_bytes(b"\x00" * 1000)
    code, out, err = run([folder, *ARGS, "--frames", "5", "--progress", "json", "--log-every", "0", "-o", tmp_path / "o"],
                         capsys)
    assert code == 1
    events = [json.loads(line) for line in err.splitlines()]  # every line of stderr is an event
    assert "run-video summary" in out  # the table stays on stdout
    stages = [e for e in events if e["event"] == "stage"]
    assert {e["video"] for e in stages} == {str(folder / "a.mp4")}
    assert not [e for e in stages if " d=" in e["stage"]]
    names = [(e["stage"], e.get("dilation")) for e in stages if e["phase"] == "start"]
    assert names[:5] == [("encode", None), ("snippets", 1), ("coalign", None), ("merge", None), ("write", None)]
    for name in names:
        own = [e for e in stages if (e["stage"], e.get("dilation")) == name]
        assert own[0]["phase"] == "start" and own[-1]["phase"] == "end", name
        assert own[0]["done"] == 0, own[0]  # a stage says it starts before its first batch
        assert own[-1]["done"] == own[-1]["total"], own[-1]
        assert len({e["total"] for e in own}) == 1, own  # one unit per stage (write: frames x files + run.json)
        assert all(e["elapsed_s"] >= 0 and 0 <= e["done"] <= e["total"] for e in own)
    failed = [e for e in events if e["event"] == "video_failed"]
    assert len(failed) == 1 and failed[0]["video"].endswith("broken.mp4") and "not a readable video" in failed[0]["error"]
    finished = [e for e in events if e["event"] == "video_done"]
    assert len(finished) == 1 and finished[0]["frames"] == 5 and finished[0]["s_per_frame"] > 0
    summary = events[-1]
    assert summary["event"] == "summary" and (summary["done"], summary["failed"], summary["videos"]) == (1, 1, 2)


def test_a_terminal_still_gets_the_live_bar(tmp_path, clip):
    master, slave = pty.openpty()
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", COLUMNS="120", TERM="xterm")
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "NO_COLOR"):
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, "-m", "rollingdepth", clip, *ARGS, "--frames", "3", "-o", tmp_path],
                            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end is closed
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(timeout=60) == 0, output.decode(errors="replace")[-2000:]
    text = output.decode(errors="replace")
    assert "\x1b[2K" in text  # the bar redraws its lines
    assert "encode" in text and "videos" in text and "━" in text
    assert not re.search(r"\d\d:\d\d:\d\d a\.mp4: ", text)  # no plain progress lines
    assert "run-video summary" in text


# ----------------------------------------------------------------------------- eval-depth
def test_eval_depth_reports_the_same_events(tmp_path, capsys, monkeypatch):
    """--dataset runs process_video per sequence with the reporter's callback (faked here)."""
    from rollingdepth.frontends import eval_depth as eval_cli
    from rollingdepth.runtime import loading
    from rollingdepth.runtime import video_job as runner
    from rollingdepth.runtime.outputs import VideoResult

    from .test_datasets import make_bonn

    make_bonn(tmp_path / "bonn", tmp_path / "split", names=("rgbd_bonn_balloon2",), frames=2)

    def fake_process_video(pipe, source, out_dir, cfg, progress):
        for done in (1, 2):
            progress("encode", done, 2)
        progress(Stage("snippets", dilation=1), 1, 1)
        for suffix in ("_pred.npy", "_Greys_r.mp4", "_run.json"):
            (out_dir / f"{source.stem}{suffix}").write_bytes(b"")  # not a readable prediction: scoring fails
        return VideoResult(name=source.stem)

    class FakePipe:
        def set_progress_bar_config(self, **kw):
            pass

    monkeypatch.setattr(loading, "load_pipeline", lambda *a, **kw: FakePipe())
    monkeypatch.setattr(runner, "process_video", fake_process_video)
    with pytest.raises(SystemExit) as info:
        eval_cli.main(["--dataset", "bonn", "--root", str(tmp_path / "bonn"), "--split", str(tmp_path / "split"),
                       "-o", str(tmp_path / "eval"), "-c", str(tmp_path), "--progress", "json", "--log-every", "0"])
    out, err = capsys.readouterr()
    assert info.value.code == 1
    events = [json.loads(line) for line in err.splitlines()]
    kinds = [(e["event"], e.get("stage"), e.get("phase")) for e in events]
    assert kinds[:7] == [("video_start", None, None), ("stage", "encode", "start"), ("stage", "encode", "progress"),
                         ("stage", "encode", "end"), ("stage", "snippets", "start"), ("stage", "snippets", "end"),
                         ("video_done", None, None)]
    assert events[4]["dilation"] == 1 and events[6]["video"] == "rgbd_bonn_balloon2" and events[6]["frames"] == 2
    assert ("message", None, None) in kinds  # the scoring error, as an event
    assert events[-1]["event"] == "summary" and events[-1]["failed"] == 1
