"""Video I/O: round trips, audio, and a clear VideoError naming the file for every kind of broken input."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pipeline.media.video import (
    VideoError,
    iter_frames,
    probe,
    read_ahead,
    read_audio,
    read_frames,
    read_image_sequence,
    write_video,
)


def moving_square(frames: int = 30, height: int = 96, width: int = 128) -> np.ndarray:
    """A gradient background with a bright square sliding across: cheap, realistic enough to compress."""
    y, x = np.mgrid[:height, :width]
    background = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    clip = np.repeat(background[None], frames, axis=0)
    for t in range(frames):
        clip[t, 30:60, 2 * t : 2 * t + 30] = 230
    return clip


def assert_names_file(excinfo: pytest.ExceptionInfo, path: Path, reason: str) -> None:
    """The error message names the file and says why."""
    message = str(excinfo.value)
    assert str(path) in message and reason in message, message


def test_round_trip(tmp_path: Path) -> None:
    clip = moving_square()
    path = write_video(tmp_path / "clip.mp4", clip, fps=25)
    assert probe(path) == {"frames": 30, "fps": 25.0, "width": 128, "height": 96}
    decoded = read_frames(path)
    assert decoded.shape == clip.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - clip).mean() < 4
    assert sum(1 for _ in iter_frames(path)) == 30
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_write_video_gray_and_odd_size(tmp_path: Path) -> None:
    gray = moving_square()[..., 0]
    assert read_frames(write_video(tmp_path / "gray.mp4", gray, fps=25)).shape == (30, 96, 128, 3)
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", moving_square(height=95), fps=25)
    assert not (tmp_path / "odd.mp4").exists()


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.mp4"
    for reader in (read_frames, probe, read_audio):
        with pytest.raises(VideoError) as excinfo:
            reader(path)
        assert_names_file(excinfo, path, "not found")


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoError) as excinfo:
        read_frames(path)
    assert_names_file(excinfo, path, "empty")


def test_text_file_named_mp4(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError) as excinfo:
        read_frames(path)
    assert_names_file(excinfo, path, "not a readable video")


def test_truncated_video(tmp_path: Path) -> None:
    whole = write_video(tmp_path / "whole.mp4", moving_square(frames=50), fps=25).read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(VideoError) as excinfo:
        read_frames(path)
    assert_names_file(excinfo, path, "truncated")


def test_read_ahead_keeps_order_errors_and_stops(tmp_path: Path) -> None:
    clip = moving_square(frames=40)
    path = write_video(tmp_path / "clip.mp4", clip, fps=25)
    times: list[float] = []
    ahead = list(read_ahead(iter_frames(path, times)))
    np.testing.assert_array_equal(np.stack(ahead), read_frames(path))  # same frames, same order
    assert len(times) == 40
    whole = path.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(VideoError) as excinfo:  # an error while decoding reaches the caller
        for _ in read_ahead(iter_frames(half)):
            pass
    assert_names_file(excinfo, half, "truncated")

    closed = threading.Event()

    def endless():
        try:
            while True:
                yield clip[0]
        finally:
            closed.set()

    frames = read_ahead(endless(), depth=2)
    next(frames)
    frames.close()  # stopping early ends the thread, which closes the source
    assert closed.is_set()
    assert not any(thread.name == "read_ahead" for thread in threading.enumerate())


def test_zero_frame_video(tmp_path: Path) -> None:
    path = tmp_path / "zero.mp4"
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    with pytest.raises(VideoError) as excinfo:
        read_frames(path)
    assert str(path) in str(excinfo.value)


def test_no_audio_stream(tmp_path: Path) -> None:
    path = write_video(tmp_path / "silent.mp4", moving_square(), fps=25)
    with pytest.raises(VideoError) as excinfo:
        read_audio(path)
    assert_names_file(excinfo, path, "no audio")


def test_image_sequence(tmp_path: Path) -> None:
    clip = moving_square(frames=3)
    paths = []
    for index, frame in enumerate(clip):
        paths.append(tmp_path / f"view_{index}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(read_image_sequence(paths), clip)
    odd = tmp_path / "odd.png"
    cv2.imwrite(str(odd), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(VideoError) as excinfo:
        read_image_sequence(paths + [odd])
    assert_names_file(excinfo, odd, "differs")
    bad = tmp_path / "bad.png"
    bad.write_text("no image here")
    with pytest.raises(VideoError) as excinfo:
        read_image_sequence([bad])
    assert_names_file(excinfo, bad, "not a readable image")


def test_grid_clip(grid_clip: Path) -> None:
    assert probe(grid_clip) == {"frames": 75, "fps": 25.0, "width": 360, "height": 288}
    assert read_frames(grid_clip).shape == (75, 288, 360, 3)


def test_read_audio_grid(grid_clip: Path) -> None:
    audio = read_audio(grid_clip, sample_rate=16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 2.9 * 16000 <= len(audio) <= 3.1 * 16000
    assert 0.01 < np.abs(audio).max() < 2.0


@pytest.mark.parametrize("degrees", [-90, 90, 180])
def test_display_rotation_is_applied_as_a_player_would(tmp_path: Path, degrees: int) -> None:
    """Phone clips store sensor-oriented pixels plus a display matrix; decoding returns the upright picture."""
    from conftest import set_display_rotation

    upright = moving_square(8)
    stored = np.rot90(upright, k=-degrees // 90, axes=(1, 2))  # what the sensor recorded
    path = set_display_rotation(write_video(tmp_path / "phone.mp4", np.ascontiguousarray(stored), fps=30), degrees)
    decoded = read_frames(path)
    assert decoded.shape == upright.shape
    assert np.abs(decoded.astype(int) - upright).mean() < 4


def test_rotated_real_face_clip_is_found_upright(tmp_path: Path, grid_clip: Path) -> None:
    """A GRID clip stored sideways with a -90 degree display matrix (as phones write) still yields mouth crops."""
    from conftest import set_display_rotation

    from pipeline.media.roi import crop_clip

    frames = read_frames(grid_clip)[:12]
    sideways = np.ascontiguousarray(np.rot90(frames, k=1, axes=(1, 2)))
    path = set_display_rotation(write_video(tmp_path / "phone.mp4", sideways, fps=25), -90)
    decoded = read_frames(path)
    assert decoded.shape == frames.shape
    result = crop_clip(decoded, source=str(path))
    assert result.found.all() and result.clip.shape == (12, 96, 96, 3)


def test_variable_frame_rate_clip_keeps_each_frame_time(tmp_path: Path) -> None:
    """Per-frame presentation times survive decoding, so irregular timing is not flattened to an average rate."""
    times = [0.0, 0.033, 0.1, 0.2, 0.233, 0.5, 0.52, 0.9]
    path = write_video(tmp_path / "vfr.mp4", moving_square(8), fps=30, times=times)
    seen: list[float] = []
    assert len(read_frames(path, seen)) == 8
    assert seen == pytest.approx(times, abs=1e-3)
    regular: list[float] = []
    read_frames(write_video(tmp_path / "cfr.mp4", moving_square(5), fps=25), regular)
    assert regular == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16], abs=1e-6)


def per_frame_rgb(path: Path) -> list[np.ndarray]:
    """The reference decode: PyAV's own ``to_ndarray(format="rgb24")`` on every frame (a new converter each time)."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])]


def assert_same_pixels(path: Path) -> list[np.ndarray]:
    """``iter_frames`` (one converter per clip) gives exactly the reference's frames, in order; those frames."""
    reference = per_frame_rgb(path)
    decoded = list(iter_frames(path))
    assert len(decoded) == len(reference) > 0
    for index, (ours, theirs) in enumerate(zip(decoded, reference)):
        assert ours.dtype == np.uint8 and ours.shape == theirs.shape, index
        assert np.array_equal(ours, theirs), f"frame {index} differs"
    return decoded


def test_reused_converter_gives_the_same_pixels_as_per_frame_conversion(tmp_path: Path) -> None:
    assert_same_pixels(write_video(tmp_path / "clip.mp4", moving_square(), fps=25))


def test_reused_converter_gives_the_same_pixels_on_grid(grid_dir: Path) -> None:
    for path in sorted(grid_dir.glob("*.mpg")):
        assert_same_pixels(path)


def h264_segment(clip: np.ndarray, pix_fmt: str) -> bytes:
    """``clip`` as a raw H.264 elementary stream in ``pix_fmt``: segments concatenate into one decodable stream."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = clip.shape[1:3]
        stream.pix_fmt, stream.options = pix_fmt, {"threads": "1"}
        for image in clip:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=pix_fmt)))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def test_reused_converter_follows_a_size_and_format_change_mid_stream(tmp_path: Path) -> None:
    """A stream switching from 128x96 4:2:0 to 96x64 4:4:4 halfway decodes each part at its own size, exactly."""
    if "libx264" not in av.codecs_available:
        pytest.skip("this PyAV build has no libx264 encoder")
    path = tmp_path / "switch.h264"
    path.write_bytes(h264_segment(moving_square(6), "yuv420p") + h264_segment(moving_square(6, 64, 96), "yuv444p"))
    decoded = assert_same_pixels(path)
    assert [frame.shape for frame in decoded] == [(96, 128, 3)] * 6 + [(64, 96, 3)] * 6


def test_an_image_named_as_a_video_is_refused_not_read_as_one_frame(tmp_path):
    """A PNG saved under a .mpg name is a per-sample error naming the file, never a one-frame clip."""
    cv2.imwrite(str(tmp_path / "still.png"), np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "still.mpg").write_bytes((tmp_path / "still.png").read_bytes())
    for reader in (probe, read_frames):
        with pytest.raises(VideoError, match=r"still.mpg.*not a video: a PNG image") as failure:
            reader(tmp_path / "still.mpg")
        assert failure.value.code == "not-a-video"
