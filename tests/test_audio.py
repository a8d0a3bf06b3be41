"""The source's sound in run-video's colour, side-by-side and stereo videos
(rollingdepth/io/video_io.py ``AudioSpan``, runtime/outputs.py): cut to the frames processed, in step with them, also when the picture
starts after the sound; ``--no-audio`` leaves it out.

The clip's sound is silence with one burst of tone at 1.0 s of the file's clock; its picture
starts about 0.2 s after the sound (0.167 s: ffmpeg puts it on the frame grid), at 24000/1001
fps. Frame f is shown at that start + f * 1001/24000 s.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from rollingdepth.frontends import run_video as cli

from .conftest import TINY_CHECKPOINT

RATE = 24000 / 1001
BURST = 1.0  # seconds: the tone's start (the file's clock)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "clip.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=64x48:rate=24000/1001:duration=2.5", "-f", "lavfi", "-i",
                    f"aevalsrc='if(gte(t,{BURST}),sin(2*PI*880*t),0)':s=48000:d=3",
                    "-vf", "setpts=PTS+0.2/TB", "-c:v", "libx264", "-bf", "3", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", str(path)], check=True)
    return path


def _picture_start(path: Path) -> float:
    """Seconds from the file's start to its first frame."""
    import av

    with av.open(str(path)) as container:
        return float(next(container.decode(video=0)).time) - (container.start_time or 0) / 1e6


def _run(clip: Path, out: Path, *extra) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([str(clip), "-c", str(TINY_CHECKPOINT), "--res", "32", "--dtype", "fp32", "-d", "1,4",
                  "--cmap", "Greys_r", "-o", str(out), "-q", *extra])
    assert info.value.code == 0


def _sound(path: Path) -> tuple[np.ndarray, int, float, float]:
    """The first audio stream's samples (mono), rate, its start and the picture's duration (s)."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.zeros(0), 0, 0.0, 0.0
        video = container.streams.video[0]
        picture = float(video.frames / video.average_rate)
        audio = container.streams.audio[0]
        start = float(audio.start_time * audio.time_base) if audio.start_time is not None else 0.0
        chunks = [f.to_ndarray().mean(axis=0) for f in container.decode(audio=0)]
        return np.concatenate(chunks), audio.rate, start, picture


def _onset(samples: np.ndarray, rate: int) -> float:
    """Seconds into the samples where the tone starts."""
    return float(np.flatnonzero(np.abs(samples) > 0.1)[0]) / rate


@pytest.mark.parametrize("start", [0, 12])
def test_the_sound_plays_with_the_frames_processed(clip, tmp_path, start):
    late = _picture_start(clip)
    assert late > 0.1  # the picture starts after the sound
    _run(clip, tmp_path / "out", "--from", str(start), "--frames", "24", "--save-stereo", "half-sbs")
    for name in ("clip_rgbd.mp4", "clip_Greys_r.mp4", "clip_3D_hsbs_LR.mp4"):
        samples, rate, offset, picture = _sound(tmp_path / "out" / name)
        assert rate == 48000 and picture == pytest.approx(24 / RATE, abs=1e-6)
        assert len(samples) / rate == pytest.approx(picture, abs=0.05)  # AAC frames: 21 ms each
        shown = late + start / RATE  # the first frame's time in the source
        onset = offset + _onset(samples, rate)
        print(f"{name} from {start}: tone at {onset:.3f} s, expected {BURST - shown:.3f}")
        assert onset == pytest.approx(BURST - shown, abs=0.025)  # within about half a frame


def test_no_audio_leaves_it_out(clip, tmp_path):
    _run(clip, tmp_path / "out", "--frames", "12", "--no-audio")
    assert len(_sound(tmp_path / "out" / "clip_rgbd.mp4")[0]) == 0
