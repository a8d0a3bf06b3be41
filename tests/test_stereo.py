"""rollingdepth/io/stereo.py: the two eyes' disparity, occlusions, hole fill, edges and layouts,
measured on planes at known depths with OpenCV's phase correlation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from rollingdepth.io.stereo import LAYOUTS, disparity, pack, render_eyes

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
    return torch.from_numpy(rgb)[None], torch.from_numpy(near)[None]


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
    left, right = (e[0].numpy() for e in render_eyes(rgb, near, strength, convergence))
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
    rgb = np.zeros((1, H, W, 3), np.uint8)
    rgb[..., 2] = 255
    rgb[0][RECT] = (255, 0, 0)
    near = np.full((1, H, W), 0.1, np.float32)
    near[0][RECT] = 1.0
    left, right = render_eyes(torch.from_numpy(rgb), torch.from_numpy(near), 5.0, 0.5)
    area = (RECT[0].stop - RECT[0].start) * (RECT[1].stop - RECT[1].start)
    for eye in (left, right):
        red = (eye[0, ..., 0] == 255) & (eye[0, ..., 2] == 0)
        assert int(red.sum()) == area
        assert int(((eye[0, ..., 0] == 0) & (eye[0, ..., 2] == 255)).sum()) == H * W - area  # nothing else


def test_nothing_wraps_around_the_frames_edges():
    rgb = np.zeros((1, H, W, 3), np.uint8)
    rgb[..., 1] = 255
    rgb[0, :, W - 20 :] = (255, 0, 0)  # a near strip at the right edge, moved further right in the left eye
    near = np.zeros((1, H, W), np.float32)
    near[0, :, W - 20 :] = 1.0
    left, right = render_eyes(torch.from_numpy(rgb), torch.from_numpy(near), 10.0, 0.0)
    for eye in (left, right):
        assert (eye[0, :, :100, 1] == 255).all()  # the left part is background only
    assert int((left[0, ..., 0] == 255).sum()) < 20 * H  # part of the strip left the frame


@pytest.mark.parametrize("layout, size", [("half-sbs", (H, W)), ("full-sbs", (H, 2 * W)), ("half-tab", (H, W)),
                                          ("full-tab", (2 * H, W)), ("anaglyph", (H, W))])
def test_each_layout_has_its_size(layout, size):
    rgb, near = _scene()
    left, right = render_eyes(rgb, near, 2.5, 0.5)
    packed = pack(left, right, layout)
    assert packed.shape == (1, *size, 3) and packed.dtype == torch.uint8
    assert set(LAYOUTS) == {"half-sbs", "full-sbs", "half-tab", "full-tab", "anaglyph"}


def test_the_anaglyph_puts_the_left_eye_in_red_and_the_right_in_cyan():
    white = torch.full((1, 8, 8, 3), 255, dtype=torch.uint8)
    black = torch.zeros_like(white)
    left_only = pack(white, black, "anaglyph")[0, 0, 0].tolist()
    right_only = pack(black, white, "anaglyph")[0, 0, 0].tolist()
    assert left_only[0] > 200 and left_only[1] < 20 and left_only[2] < 20
    assert right_only[0] < 20 and right_only[1] > 200 and right_only[2] > 200


def test_bad_settings_name_themselves():
    near = torch.zeros(1, 4, 4)
    with pytest.raises(ValueError, match="convergence"):
        disparity(near, 2.5, 1.5)
    with pytest.raises(ValueError, match="strength"):
        disparity(near, -1.0, 0.5)
    with pytest.raises(ValueError, match="layout"):
        pack(torch.zeros(1, 4, 4, 3, dtype=torch.uint8), torch.zeros(1, 4, 4, 3, dtype=torch.uint8), "sbs")
