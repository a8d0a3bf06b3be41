"""What the picture keeps (rollingdepth/io/av_video.py, video_io.py; issue #42): colour matrices and ranges read and written, a
non-square sample aspect, EXIF orientation of images, an image folder's sizes checked at once.

Colour clips are made with the bundled ffmpeg from eight flat patches of known RGB colours,
converted to YUV with a given matrix and range (and tagged so, or not); a patch's mean, away
from its edges, is compared with the colour it was made from.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction

import imageio_ffmpeg
import numpy as np
import pytest

from rollingdepth.io import av_video
from rollingdepth.io.video_io import VideoWriter, load_source, open_source

from .test_exact_video import no_decoding  # noqa: F401  (a fixture)

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
COLOURS = np.array([(220, 40, 40), (40, 200, 60), (30, 60, 220), (230, 180, 140),
                    (128, 128, 128), (250, 230, 20), (20, 20, 20), (240, 240, 240)], np.uint8)
LEVELS = 4  # a decoded patch within this many levels of its colour (H.264 at CRF 10 to 14, chroma halved)


def patches(height: int, width: int, count: int = 3) -> np.ndarray:
    """uint8 ``[count, H, W, 3]``: eight vertical stripes of :data:`COLOURS`."""
    frames = np.zeros((count, height, width, 3), np.uint8)
    step = width // 8
    for i, colour in enumerate(COLOURS):
        frames[:, :, i * step : (i + 1) * step] = colour
    return frames


def patch_colours(image: np.ndarray) -> np.ndarray:
    """float ``[8, 3]``: each stripe's mean colour, its edges left out."""
    h, w = image.shape[:2]
    step = w // 8
    return np.array([image[h // 4 : 3 * h // 4, i * step + step // 4 : (i + 1) * step - step // 4].reshape(-1, 3).mean(0)
                     for i in range(8)])


def colour_error(image: np.ndarray) -> float:
    return float(np.abs(patch_colours(image) - COLOURS).max())


def make(path, height: int, width: int, matrix: str, colour_range: str, tagged: bool = True, codec=None):
    """A clip of :func:`patches` converted with ``matrix`` and ``colour_range`` (tv / pc), tagged so or untagged."""
    tags = f"setparams=colorspace={matrix if tagged else 'unknown'}:range={colour_range if tagged else 'unknown'}"
    picture = f"scale=out_color_matrix={matrix}:out_range={colour_range},format=yuv420p,{tags}"
    codec = codec or ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "10"]
    cmd = [FFMPEG, "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "24",
           "-i", "-", "-vf", picture, *codec, str(path)]
    subprocess.run(cmd, input=patches(height, width).tobytes(), check=True)
    return path


def tags(path) -> dict:
    """The colour tags and sample aspect of a file's first video frame, as PyAV reads them."""
    import av

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return {"colorspace": int(frame.colorspace), "primaries": int(frame.color_primaries),
                "trc": int(frame.color_trc), "range": int(frame.color_range),
                "sar": Fraction(container.streams.video[0].sample_aspect_ratio or 1)}


# ----------------------------------------------------------------------------- colour in
VP9 = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-crf", "10", "-b:v", "0"]
SOURCES = {  # name: (file, H, W, matrix, range, tagged, codec)
    "hd_bt709": ("hd.mp4", 720, 1280, "bt709", "tv", True, None),
    "hd_bt709_untagged": ("hd_untagged.mp4", 720, 1280, "bt709", "tv", False, None),  # players assume BT.709
    "sd_bt601_untagged": ("sd_untagged.mp4", 240, 320, "bt601", "tv", False, None),
    "full_range_bt601": ("full.mp4", 240, 320, "bt470bg", "pc", True, None),  # H.264's yuvj420p
    "full_range_bt709_vp9": ("full_vp9.mkv", 240, 320, "bt709", "pc", True, VP9),  # yuv420p with the range flag
}


@pytest.mark.parametrize("kind", list(SOURCES))
def test_sources_decode_with_their_own_matrix_and_range(tmp_path, kind):
    name, h, w, matrix, colour_range, tagged, codec = SOURCES[kind]
    path = make(tmp_path / name, h, w, matrix, colour_range, tagged, codec)
    frames = load_source(path).read()
    assert frames.shape == (3, h, w, 3)
    assert colour_error(frames[0]) <= LEVELS, patch_colours(frames[0]).round(1)


# ----------------------------------------------------------------------------- HDR and bit depth
X265 = ["-c:v", "libx265", "-x265-params", "log-level=error:crf=10"]
HDR_SOURCES = {"pq_hevc": ("pq.mp4", "smpte2084", X265), "hlg_vp9": ("hlg.mkv", "arib-std-b67", VP9)}


def hdr_clip(path, transfer: str, codec: list[str], height: int = 64, width: int = 256):
    """:func:`patches` as 10-bit BT.2020 YUV (limited range), tagged with ``transfer`` (PQ, HLG):
    the code values are an SDR clip's, so read as SDR they give the patches' colours back."""
    picture = (f"scale=out_color_matrix=bt2020:out_range=tv,format=yuv420p10le,"
               f"setparams=colorspace=bt2020nc:color_primaries=bt2020:color_trc={transfer}:range=tv")
    cmd = [FFMPEG, "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "24",
           "-i", "-", "-vf", picture, *codec, str(path)]
    subprocess.run(cmd, input=patches(height, width).tobytes(), check=True)
    return path


@pytest.mark.parametrize("kind", list(HDR_SOURCES))
def test_hdr_and_bit_depth_are_probed_from_the_headers(tmp_path, kind, no_decoding):
    name, transfer, codec = HDR_SOURCES[kind]
    facts = av_video.probe_stream(hdr_clip(tmp_path / name, transfer, codec))
    assert facts.picture == av_video.PictureFormat("yuv420p10le", 10, transfer)
    assert facts.picture.hdr == {"smpte2084": "PQ", "arib-std-b67": "HLG"}[transfer]
    sdr = av_video.probe_stream(make(tmp_path / "sdr.mp4", 48, 64, "bt709", "tv"))
    assert (sdr.picture.bit_depth, sdr.picture.hdr) == (8, None)


@pytest.mark.parametrize("kind", list(HDR_SOURCES))
def test_10_bit_frames_decode_to_their_colours(tmp_path, kind):
    """Within a level of the colours made (swscale's default 10-bit to rgb24 path was 2 levels
    dark, 3 at most; 10-bit values taken as 8-bit ones would be off by a factor of 4)."""
    name, transfer, codec = HDR_SOURCES[kind]
    frames = load_source(hdr_clip(tmp_path / name, transfer, codec)).read()
    assert frames.shape == (3, 64, 256, 3) and frames.dtype == np.uint8
    assert colour_error(frames[0]) <= 1, patch_colours(frames[0]).round(1)


def test_run_video_says_once_that_an_hdr_source_is_read_as_sdr(tmp_path, capsys):
    """One note line for the PQ clip, none for the SDR one beside it; both are predicted."""
    from rollingdepth.frontends import run_video as cli

    from .conftest import TINY_CHECKPOINT

    clips = tmp_path / "in"
    clips.mkdir()
    hdr_clip(clips / "pq.mp4", "smpte2084", X265)
    make(clips / "sdr.mp4", 64, 256, "bt709", "tv")
    with pytest.raises(SystemExit) as info:
        cli.main([str(clips), "-c", str(TINY_CHECKPOINT), "--res", "64", "-d", "1,2", "--dtype", "fp32", "--frames",
                  "3", "--cmap", "Greys_r", "-o", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert info.value.code == 0, captured.err
    notes = [line for line in (captured.out + captured.err).splitlines() if "HDR" in line]
    assert notes == ["pq: an HDR source (PQ, 10-bit): read as SDR without tone mapping, so its colours look washed "
                     "out in the side-by-side video; depth is computed from it all the same"]
    assert {p.name for p in (tmp_path / "o").glob("*_rgbd.mp4")} == {"pq_rgbd.mp4", "sdr_rgbd.mp4"}
    import json

    pictures = {stem: json.loads((tmp_path / "o" / f"{stem}_run.json").read_text())["input_picture"]
                for stem in ("pq", "sdr")}
    assert pictures["pq"] == {"pix_fmt": "yuv420p10le", "bit_depth": 10, "transfer": "smpte2084", "hdr": "PQ"}
    assert pictures["sdr"]["bit_depth"] == 8 and pictures["sdr"]["hdr"] is None  # the run report says what was read


def test_the_page_says_that_an_hdr_source_is_read_as_sdr(tmp_path, tiny_pipe):
    """The web page's Done message carries run-video's HDR note for the PQ clip, and none for the SDR one."""
    from rollingdepth.frontends.app import AppSettings, DepthService, PageForm
    from rollingdepth.frontends.app_files import Workspace

    from .conftest import TINY_CHECKPOINT

    service = DepthService(tiny_pipe, AppSettings(checkpoint=str(TINY_CHECKPOINT), dtype="fp32", device="cpu",
                                                  max_res=64), Workspace(60, tmp_path))
    form = PageForm(res=64, dilations="1,2", snippet="3", refine=0, cmap="Greys_r", frames=3)
    uploads = service.workspace.root / "uploads"  # where the page's uploads land
    uploads.mkdir()
    try:
        pq = service.run("s", hdr_clip(uploads / "pq.mp4", "smpte2084", X265), form)
        sdr = service.run("s", make(uploads / "sdr.mp4", 64, 256, "bt709", "tv"), form)
    finally:
        service.workspace.close()
    assert pq.ok and sdr.ok, (pq.message, sdr.message)
    assert pq.message.endswith(" Note: pq: an HDR source (PQ, 10-bit): read as SDR without tone mapping, so its "
                               "colours look washed out in the side-by-side video; depth is computed from it all the "
                               "same."), pq.message
    assert "HDR" not in sdr.message


# ----------------------------------------------------------------------------- colour out
@pytest.mark.parametrize("size, tag, matrix", [((64, 1544), 1, "bt709"),  # the default side-by-side's width
                                               ((720, 1280), 1, "bt709"), ((48, 64), 6, "bt601")])
def test_output_videos_are_tagged_and_converted_to_match(tmp_path, size, tag, matrix):
    """HD and larger: BT.709 matrix, primaries and transfer (1); SD: SMPTE 170M, BT.601 (6);
    limited range (1) both. Decoded with the tagged matrix, as a player does, the colours come
    back within a few levels (BT.601 read as BT.709 was up to 35 levels off)."""
    import av

    path = tmp_path / "out.mp4"
    with VideoWriter(path, 24, size) as writer:
        for frame in patches(*size):
            writer.write(frame)
    assert tags(path) == {"colorspace": tag, "primaries": tag, "trc": tag, "range": 1, "sar": 1}
    assert colour_error(load_source(path).read()[0]) <= LEVELS
    with av.open(str(path)) as container:  # as a player converts it: the matrix its size implies, limited range
        frame = next(container.decode(video=0))
        shown = frame.to_ndarray(format="rgb24", src_colorspace=1 if matrix == "bt709" else 5, src_color_range=1,
                                 dst_color_range=2)
    assert colour_error(shown) <= LEVELS


# ----------------------------------------------------------------------------- sample aspect
def anamorphic(path, sar: str, height: int = 576, width: int = 720, rotate: int = 0):
    """A PAL-sized clip whose pixels are ``sar`` wide (16/15: 4:3, 64/45: 16:9)."""
    rotation = ["-display_rotation", str(rotate)] if rotate else []
    cmd = [FFMPEG, "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "25",
           "-i", "-", "-vf", f"setsar={sar}", "-c:v", "libx264", "-preset", "ultrafast", str(path)]
    subprocess.run(cmd, input=patches(height, width).tobytes(), check=True)
    if rotate:
        turned = path.with_name(f"turned_{path.name}")
        subprocess.run([FFMPEG, "-y", "-v", "error", *rotation, "-i", str(path), "-c", "copy", str(turned)], check=True)
        return turned
    return path


@pytest.mark.parametrize("sar, ext", [("16/15", "mp4"), ("64/45", "mp4"), ("64/45", "mkv")])
def test_the_sample_aspect_is_probed_and_written(tmp_path, sar, ext):
    source = load_source(anamorphic(tmp_path / f"pal.{ext}", sar))
    assert source.size == (576, 720) and source.sample_aspect == Fraction(sar)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 25, (288, 360), sample_aspect=source.sample_aspect) as writer:
        for frame in patches(288, 360):
            writer.write(frame)
    assert tags(out)["sar"] == Fraction(sar)  # shown 4:3 (16:9) as the source is, pixels as they are
    assert load_source(out).sample_aspect == Fraction(sar)
    square = load_source(anamorphic(tmp_path / f"square.{ext}", "1"))
    assert square.sample_aspect == 1


def test_a_rotated_anamorphic_source_has_the_inverse_aspect(tmp_path):
    source = load_source(anamorphic(tmp_path / "pal.mp4", "16/15", rotate=90))
    assert source.size == (720, 576) and source.sample_aspect == Fraction(15, 16)


def test_run_video_keeps_the_sample_aspect(tmp_path, capsys):
    """The colour and side-by-side videos of an anamorphic source carry its sample aspect."""
    from rollingdepth.frontends import run_video as cli

    from .conftest import TINY_CHECKPOINT

    clip = anamorphic(tmp_path / "pal.mp4", "64/45", height=96, width=120)
    with pytest.raises(SystemExit) as info:
        cli.main([str(clip), "-c", str(TINY_CHECKPOINT), "--res", "64", "-d", "1,2", "--dtype", "fp32", "--frames", "3",
                  "--cmap", "Greys_r", "-o", str(tmp_path / "o")])
    assert info.value.code == 0, capsys.readouterr().err
    for name in ("pal_Greys_r.mp4", "pal_rgbd.mp4"):
        assert tags(tmp_path / "o" / name)["sar"] == Fraction(64, 45), name


# ----------------------------------------------------------------------------- images
def pattern(height: int = 40, width: int = 64) -> np.ndarray:
    """uint8 RGB with no symmetry: four coloured quadrants of unequal sizes and a gradient."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 3, : width // 4] = (255, 0, 0)
    image[: height // 3, width // 4 :] = (0, 255, 0)
    image[height // 3 :, : width // 2] = (0, 0, 255)
    image[height // 3 :, width // 2 :] = (255, 255, 0)
    image[..., 1] = np.maximum(image[..., 1], np.linspace(0, 120, width, dtype=np.uint8)[None])
    return image


def save_jpeg(path, image: np.ndarray, orientation: int | None):
    from PIL import Image

    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(image).save(path, quality=95, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_to_image_sequences(tmp_path, orientation):
    """A phone's burst (orientation 6: held upright, stored sideways) comes out upright, as
    Pillow's ``ImageOps.exif_transpose`` shows it; all eight orientations."""
    from PIL import Image, ImageOps

    folder = tmp_path / "burst"
    folder.mkdir()
    for i in range(3):
        save_jpeg(folder / f"IMG_{i:04d}.jpg", pattern(), orientation)
    [entry] = open_source(folder)
    source = load_source(entry)
    frames = source.read()
    with Image.open(folder / "IMG_0000.jpg") as image:
        as_stored = np.asarray(image.convert("RGB"))
        shown = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    turned = orientation >= 5
    assert source.size == ((64, 40) if turned else (40, 64)) and frames.shape == (3, *source.size, 3)
    assert np.abs(frames[0].astype(int) - shown.astype(int)).mean() < 2
    if orientation == 6:  # turned a quarter clockwise: the stored first column is the shown first row, reversed
        assert np.abs(frames[0].astype(int) - np.rot90(as_stored, -1).astype(int)).mean() < 2


def test_an_image_folder_of_two_sizes_fails_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from rollingdepth.errors import InputError
    from rollingdepth.frontends import run_video as cli

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        save_jpeg(folder / f"f{i}.jpg", pattern(40, 64) if i != 2 else pattern(40, 60), None)
    save_jpeg(tmp_path / "upright.jpg", pattern(64, 40), None)  # orientation counts: 40x64 shown sideways is 64x40
    [entry] = open_source(folder)
    with pytest.raises(InputError, match=r"frames: f2\.jpg is 60x40 pixels but f0\.jpg is 64x40"):
        load_source(entry)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "load_model", no_model)
    with pytest.raises(SystemExit) as info:
        cli.main([str(folder), "-c", "unused", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    lines = [line for line in err.splitlines() if "f2.jpg" in line]
    assert len(lines) == 1 and "all images of a sequence need one size" in lines[0], err
    sideways = tmp_path / "sideways"
    sideways.mkdir()
    save_jpeg(sideways / "a.jpg", pattern(40, 64), 6)
    save_jpeg(sideways / "b.jpg", pattern(64, 40), None)
    assert load_source(open_source(sideways)[0]).size == (64, 40)  # both shown 40 wide, 64 high


# ----------------------------------------------------------------------------- variable frame rate
def _seconds(path) -> np.ndarray:
    """Each displayed frame's time, in seconds from the first."""
    source = load_source(path)
    table = np.asarray(source._frame_table(True), dtype=np.int64)
    return (table - table[0]) * float(source.time_base)


def test_a_variable_rate_is_written_with_the_sources_frame_times(tmp_path):
    """10, 30 and 15 fps parts: the written frames are shown at the source's times (the mean
    rate put frames up to 1.05 s off), each frame the one written, and seeking in the file works."""
    from .test_exact_video import drawn_index, make

    source = load_source(make(tmp_path, "variable_rate"))
    assert source.variable_rate
    frames = source.read()
    times = source.frame_times_of(30, 60)
    with VideoWriter(tmp_path / "out.mp4", source.rate, frames.shape[1:3], times=times) as writer:
        for frame in frames[30:90]:
            writer.write(frame)
    written = _seconds(tmp_path / "out.mp4")
    wanted = _seconds(source.path)[30:90] - _seconds(source.path)[30]
    shortest = np.diff(wanted).min()
    assert len(written) == 60 and np.abs(written - wanted).max() < shortest / 2
    out = load_source(tmp_path / "out.mp4")
    assert out.variable_rate
    assert [drawn_index(f) for f in out.read()] == list(range(30, 90))
    assert [drawn_index(f) for f in out.read(25, 3)] == [55, 56, 57]  # found by time
    assert tags(tmp_path / "out.mp4")["colorspace"] == 6  # still tagged


def test_run_video_writes_a_variable_rate_with_its_frame_times(tmp_path, capsys):
    from rollingdepth.frontends import run_video as cli

    from .conftest import TINY_CHECKPOINT
    from .test_exact_video import make

    clip = make(tmp_path, "variable_rate")
    with pytest.raises(SystemExit) as info:
        cli.main([str(clip), "-c", str(TINY_CHECKPOINT), "--res", "0", "-d", "1,2", "--dtype", "fp32", "--from", "30",
                  "--frames", "20", "--cmap", "Greys_r", "--save-depth-video", "-o", str(tmp_path / "o")])
    assert info.value.code == 0, capsys.readouterr().err
    wanted = _seconds(clip)[30:50] - _seconds(clip)[30]
    assert np.ptp(np.diff(wanted)) > 0.03  # the frames 30 to 49 are of two rates: the mean one would put some off
    for name in ("variable_rate_clip_Greys_r.mp4", "variable_rate_clip_rgbd.mp4", "variable_rate_clip_depth16.mkv"):
        written = _seconds(tmp_path / "o" / name)
        assert len(written) == 20 and np.abs(written - wanted).max() < np.diff(wanted).min() / 2, name
    from rollingdepth.io.depth_video import read_depth_video

    assert len(list(read_depth_video(tmp_path / "o" / "variable_rate_clip_depth16.mkv"))) == 20
