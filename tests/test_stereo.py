"""rollingdepth/io/stereo.py: the two eyes' disparity, occlusions, hole fill, edges and layouts,
measured on planes at known depths with OpenCV's phase correlation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rollingdepth.io.stereo import LAYOUTS, disparity, pack, packed_size, render_eyes

H, W = 180, 320
RECT = (slice(50, 130), slice(110, 210))  # the near plane


def _texture(seed: int) -> np.ndarray:
    """uint8 ``[H, W, 3]`` random texture, smoothed: phase correlation needs structure."""
    noise = np.random.default_rng(seed).uniform(0, 255, (H, W, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 1.5) * 2.5 - 190, 0, 255).astype(np.uint8)


def _scene(near_value: float = 0.9, far_value: float = 0.2):
    """Textured background at ``far_value`` with a textured rectangle at ``near_value`` (inverse depth)."""
    rgb = _texture(0)
    rgb[RECT] = _texture(1)[RECT]
    near = np.full((H, W), far_value, np.float32)
    near[RECT] = near_value
    return rgb, near


def _shift(left: np.ndarray, right: np.ndarray, rows: slice, cols: slice) -> float:
    """How far right the left eye's patch lies from the right eye's (pixels)."""
    a = cv2.cvtColor(np.ascontiguousarray(left[rows, cols]), cv2.COLOR_RGB2GRAY).astype(np.float64)
    b = cv2.cvtColor(np.ascontiguousarray(right[rows, cols]), cv2.COLOR_RGB2GRAY).astype(np.float64)
    (dx, dy), _ = cv2.phaseCorrelate(b, a)
    assert abs(dy) < 0.5
    return dx


@pytest.mark.parametrize("strength, convergence", [(2.5, 0.5), (4.0, 0.0), (3.0, 1.0), (1.7, 0.3)])
def test_the_eyes_disparity_is_the_intended_one_with_the_right_sign(strength, convergence):
    rgb, near = _scene()
    left, right = render_eyes(rgb, near, strength, convergence)
    want_near = strength / 100 * W * (0.9 - convergence)
    want_far = strength / 100 * W * (0.2 - convergence)
    got_near = _shift(left, right, slice(60, 120), slice(130, 190))  # inside the rectangle, clear of its edges
    got_far = _shift(left, right, slice(0, 40), slice(10, 90))
    print(f"strength {strength}, convergence {convergence}: near {got_near:+.2f} (want {want_near:+.2f}), "
          f"far {got_far:+.2f} (want {want_far:+.2f})")
    assert abs(got_near - want_near) <= 1.0 and abs(got_far - want_far) <= 1.0
    # in front of the screen plane the left eye's image lies to the right of the right eye's
    assert got_near > got_far


def test_the_nearer_plane_wins_and_holes_are_filled_from_the_background():
    """A flat red rectangle, near, over a flat blue background, far: in each eye exactly the
    rectangle's pixels are red (the background never covers it; the disoccluded strip beside it
    is filled with background, not smeared red)."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 2] = 255
    rgb[RECT] = (255, 0, 0)
    near = np.full((H, W), 0.1, np.float32)
    near[RECT] = 1.0
    left, right = render_eyes(rgb, near, 5.0, 0.5)
    area = (RECT[0].stop - RECT[0].start) * (RECT[1].stop - RECT[1].start)
    for eye in (left, right):
        red = (eye[..., 0] == 255) & (eye[..., 2] == 0)
        assert int(red.sum()) == area
        assert int(((eye[..., 0] == 0) & (eye[..., 2] == 255)).sum()) == H * W - area  # nothing else


def test_nothing_wraps_around_the_frames_edges():
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 1] = 255
    rgb[:, W - 20 :] = (255, 0, 0)  # a near strip at the right edge, moved further right in the left eye
    near = np.zeros((H, W), np.float32)
    near[:, W - 20 :] = 1.0
    left, right = render_eyes(rgb, near, 10.0, 0.0)
    for eye in (left, right):
        assert (eye[:, :100, 1] == 255).all()  # the left part is background only
    assert int((left[..., 0] == 255).sum()) < 20 * H  # part of the strip left the frame


@pytest.mark.parametrize("layout, size", [("half-sbs", (H, W)), ("full-sbs", (H, 2 * W)), ("half-tab", (H, W)),
                                          ("full-tab", (2 * H, W)), ("anaglyph", (H, W))])
def test_each_layout_has_its_size(layout, size):
    rgb, near = _scene()
    left, right = render_eyes(rgb, near, 2.5, 0.5)
    packed = pack(left, right, layout)
    assert packed.shape == (*size, 3) and packed.dtype == np.uint8 and packed_size(layout, (H, W)) == size
    assert set(LAYOUTS) == {"half-sbs", "full-sbs", "half-tab", "full-tab", "anaglyph"}


def test_the_anaglyph_puts_the_left_eye_in_red_and_the_right_in_cyan():
    white = np.full((8, 8, 3), 255, dtype=np.uint8)
    black = np.zeros_like(white)
    left_only = pack(white, black, "anaglyph")[0, 0].tolist()
    right_only = pack(black, white, "anaglyph")[0, 0].tolist()
    assert left_only[0] > 200 and left_only[1] < 20 and left_only[2] < 20
    assert right_only[0] < 20 and right_only[1] > 200 and right_only[2] > 200


def test_bad_settings_name_themselves():
    near = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match="convergence"):
        disparity(near, 2.5, 1.5)
    with pytest.raises(ValueError, match="strength"):
        disparity(near, -1.0, 0.5)
    with pytest.raises(ValueError, match="layout"):
        pack(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), "sbs")


# ----------------------------------------------------------------------------- the output (run-video's writer)
def _clip_with_sound(path, frames: np.ndarray) -> "Path":
    """``frames`` at 24000/1001 fps with 3 s of tone (AAC), H.264."""
    import subprocess

    import imageio_ffmpeg

    n, h, w, _ = frames.shape
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
                    "-s", f"{w}x{h}", "-r", "24000/1001", "-i", "-", "-f", "lavfi", "-t", "3", "-i",
                    "sine=frequency=440", "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-crf", "10",
                    "-pix_fmt", "yuv444p", "-c:a", "aac", str(path)], input=frames.tobytes(), check=True)
    return path


def _write_stereo(tmp_path, layouts: list[str], strength: float, convergence: float):
    """The stereo output of the textured two-plane scene, 10 frames with sound, its prediction
    (``3 * near + 1``, an affine inverse depth) at half the input's size. Returns (folder, source)."""
    import contextlib

    from rollingdepth.io.exports import DepthMapping, VideoMapping
    from rollingdepth.io.output_formats import OutputFrame, VideoOutput, output_format
    from rollingdepth.io.video_io import probe_video
    from rollingdepth.runtime.run_config import RunConfig

    rgb, near = _scene()
    n = 10
    source = probe_video(_clip_with_sound(tmp_path / "clip.mp4", np.repeat(rgb[None], n, axis=0)))
    small = cv2.resize(near, (W // 2, H // 2), interpolation=cv2.INTER_NEAREST)
    prediction = np.repeat((3 * small + 1)[None], n, axis=0).astype(np.float32)  # [N, h, w]
    np.save(tmp_path / "pred.npy", prediction)
    cfg = RunConfig.build(None, dict(save_stereo=layouts, stereo_strength=strength, convergence=convergence))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = VideoOutput(out_dir=out_dir, stem="clip", settings=cfg, frames=n, size=prediction.shape[1:],
                      input_size=tuple(source.size), prediction_range=(1.0, 4.0),
                      mapping=VideoMapping((DepthMapping("inverse", 1.0, 4.0),)), fps=source.rate,
                      sound=lambda: source.audio(0, n), prediction_file=lambda: tmp_path / "pred.npy",
                      snippet_maps=lambda: [], snippet_plan=None)
    fmt = output_format("stereo")
    with contextlib.ExitStack() as stack:
        writers = fmt.open(out, stack)
        for i, image in enumerate(source.frames(0)):
            frame = OutputFrame(i, prediction[i], prediction[i], None, image)
            for _, write in writers:
                write(frame)
    return out_dir, source


def _decoded(path) -> tuple[list[np.ndarray], "Fraction", float]:
    """The frames (RGB), the exact rate and the sound's duration (s) of a written video."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        rate = video.average_rate
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        sound = sum(f.samples / f.sample_rate for f in container.decode(audio=0)) if container.streams.audio else 0.0
    return frames, rate, sound


@pytest.mark.parametrize("strength, convergence", [(2.5, 0.5), (4.0, 0.0)])
def test_the_stereo_videos_show_the_intended_disparity_at_the_sources_rate_with_its_sound(
        tmp_path, strength, convergence):
    """Known depth through the writer, each layout read back: its size, the source's frame count,
    exact rate and sound; the disparity between the eyes (phase correlation in the decoded video)
    within 1 px of the intended one, in front of the screen the left eye's image to the right."""
    from fractions import Fraction

    from rollingdepth.io.stereo import LAYOUT_TAGS

    out_dir, source = _write_stereo(tmp_path, list(LAYOUTS), strength, convergence)
    sizes = {"half-sbs": (H, W), "full-sbs": (H, 2 * W), "half-tab": (H, W), "full-tab": (2 * H, W),
             "anaglyph": (H, W)}
    for layout in LAYOUTS:
        frames, rate, sound = _decoded(out_dir / f"clip_{LAYOUT_TAGS[layout]}.mp4")
        assert len(frames) == 10 and frames[0].shape[:2] == sizes[layout], layout
        assert rate == Fraction(24000, 1001) == source.rate, layout
        assert sound == pytest.approx(10 * 1001 / 24000, abs=0.05), layout  # AAC frames: 21 ms each
    # near: the rectangle 1, the background 0 (the shot's percentiles)
    want_near, want_far = strength / 100 * W * (1 - convergence), strength / 100 * W * (0 - convergence)
    frames, _, _ = _decoded(out_dir / "clip_3D_ftab_TB.mp4")
    left, right = frames[5][:H], frames[5][H:]
    got_near = _shift(left, right, slice(60, 120), slice(130, 190))
    got_far = _shift(left, right, slice(0, 40), slice(10, 90))
    frames, _, _ = _decoded(out_dir / "clip_3D_fsbs_LR.mp4")
    side_near = _shift(frames[5][:, :W], frames[5][:, W:], slice(60, 120), slice(130, 190))
    print(f"near {got_near:+.2f} / {side_near:+.2f} (want {want_near:+.2f}), far {got_far:+.2f} (want {want_far:+.2f})")
    assert abs(got_near - want_near) <= 1.0 and abs(side_near - want_near) <= 1.0 and abs(got_far - want_far) <= 1.0
    assert got_near > got_far


@pytest.mark.parametrize("left_eye", [True, False])
def test_every_run_of_holes_takes_the_background_sides_neighbour(left_eye):
    """The run-wise hole fill against a plain loop over each row: runs at both edges, a row with
    nothing reached, runs of one column."""
    from rollingdepth.io.stereo import _fill_holes

    rng = np.random.default_rng(1)
    h, w, empty = 40, 23, (23 if left_eye else -1)
    winner = rng.integers(0, w, (h, w)).astype(np.int32)
    winner[rng.random((h, w)) < 0.35] = empty
    winner[3] = empty  # nothing reached
    winner[4, :5] = empty
    winner[5, -4:] = empty
    want = winner.copy()
    for r in range(h):
        reached = [c for c in range(w) if winner[r, c] != empty]
        for c in range(w):
            if winner[r, c] != empty:
                continue
            left = [x for x in reached if x < c]
            right = [x for x in reached if x > c]
            sides = (left[-1:], right[:1]) if left_eye else (right[:1], left[-1:])
            pick = sides[0] or sides[1]
            want[r, c] = winner[r, pick[0]] if pick else c
    got = winner.copy()
    _fill_holes(got, empty, left_eye)
    assert np.array_equal(got, want)


# ----------------------------------------------------------------------------- stereo-video: again without the model
def _exit_code(main, args) -> int:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return info.value.code


def test_stereo_video_makes_run_videos_stereo_again_without_the_model(tmp_path, capsys, monkeypatch):
    """The same settings give the same frames as run-video's own stereo video; another strength
    gives other frames; the model is never loaded."""
    from rollingdepth.frontends import run_video
    from rollingdepth.frontends import stereo_video
    from rollingdepth.runtime import loading

    from .conftest import TINY_CHECKPOINT

    clip = Path(__file__).resolve().parent.parent / "data" / "samples" / "synthetic_scene.mp4"  # 320x192, smooth
    base = [clip, "-c", TINY_CHECKPOINT, "--res", "32", "--dtype", "fp32", "-d", "1,3", "--cmap", "Greys_r", "-q",
            "--frames", "8",
            "--no-save-sbs", "-o", tmp_path / "o", "--save-stereo", "full-sbs", "--stereo-strength", "3"]
    assert _exit_code(run_video.main, base) == 0
    monkeypatch.setattr(loading, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    pred = tmp_path / "o" / "synthetic_scene_pred.npy"
    assert _exit_code(stereo_video.main, [pred, "--save-stereo", "full-sbs", "--stereo-strength", "3", "-o",
                                          tmp_path / "same", "-q"]) == 0
    assert _exit_code(stereo_video.main, [pred, "--save-stereo", "full-sbs", "--stereo-strength", "0", "-o",
                                          tmp_path / "flat", "-q"]) == 0
    name = "synthetic_scene_3D_fsbs_LR.mp4"
    first, rate, _ = _decoded(tmp_path / "o" / name)
    again, rate_again, _ = _decoded(tmp_path / "same" / name)
    flat, _, _ = _decoded(tmp_path / "flat" / name)
    assert len(first) == len(again) == len(flat) == 8 and rate == rate_again
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    def apart(f):  # how far the two eyes of a frame differ, in mean levels
        return float(np.abs(f[:, :320].astype(int) - f[:, 320:]).mean())

    print("eyes apart, strength 0:", [round(apart(f), 1) for f in flat], "3:", [round(apart(f), 1) for f in first])
    assert max(apart(f) for f in flat) < 2 < 4 < min(apart(f) for f in first)  # strength 0: the eyes alike


def test_stereo_video_says_what_is_missing_in_one_line(tmp_path, capsys):
    from rollingdepth.frontends import stereo_video

    lone = tmp_path / "b_pred.npy"
    np.save(lone, np.zeros((3, 4, 4), np.float32))
    assert _exit_code(stereo_video.main, [lone]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run.json" in err and "Traceback" not in err
    assert _exit_code(stereo_video.main, [lone, "--convergence", "2"]) == 2
    assert "--convergence: 2.0 must be between 0" in " ".join(capsys.readouterr().err.split())
    assert not list(tmp_path.glob("*.mp4"))
