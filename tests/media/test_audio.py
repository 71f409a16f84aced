"""Log-mel features and their frame-for-frame alignment with video (synthetic signals and a real GRID clip)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.media.audio import (
    SAMPLE_RATE,
    align_to_video,
    audio_for_clip,
    hz_to_mel,
    log_mel,
    mel_filterbank,
    mel_to_hz,
)
from pipeline.media.video import read_audio


def test_filterbank_is_triangles_with_unit_peaks():
    bank = mel_filterbank(80, 512, SAMPLE_RATE)
    assert bank.shape == (80, 257)
    assert bank.min() >= 0.0
    assert np.all(bank.max(axis=1) > 0.3) and bank.max() <= 1.0 + 1e-6
    assert np.all(np.diff(bank.argmax(axis=1)) >= 0)
    assert np.allclose(mel_to_hz(hz_to_mel(np.array([0.0, 440.0, 8000.0]))), [0.0, 440.0, 8000.0])


def test_log_mel_frame_count_and_tone_bin():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    mel = log_mel(tone)
    assert mel.shape == (101, 80) and mel.dtype == np.float32
    centres = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2), 82))[1:-1]
    assert abs(centres[mel[50].argmax()] - 1000.0) < 60.0
    assert log_mel(np.zeros(SAMPLE_RATE // 10, np.float32)).max() == pytest.approx(np.log(1e-6), abs=1e-3)


def test_alignment_groups_four_mel_frames_per_video_frame_at_25_fps():
    mel = np.repeat(np.arange(300, dtype=np.float32)[:, None], 80, axis=1)
    aligned = align_to_video(mel, 75, 25.0)
    assert aligned.shape == (75, 4, 80)
    assert np.array_equal(aligned[:, :, 0], np.arange(300).reshape(75, 4))
    short = align_to_video(mel[:298], 75, 25.0)
    assert short.shape == (75, 4, 80) and list(short[-1, :, 0]) == [296, 297, 297, 297]


def test_alignment_at_30_fps_keeps_time():
    mel = np.repeat(np.arange(100, dtype=np.float32)[:, None], 2, axis=1)
    aligned = align_to_video(mel, 30, 30.0)
    assert aligned.shape == (30, 3, 2)
    assert np.array_equal(aligned[:, 0, 0], np.floor(np.arange(30) * 100 / 30))
    with pytest.raises(ValueError):
        align_to_video(mel[:0], 30, 30.0)


def test_grid_clip_features_align_with_its_75_frames(grid_clip):
    samples = read_audio(grid_clip, SAMPLE_RATE)
    mel = log_mel(samples)
    assert abs(mel.shape[0] - 300) <= 4
    aligned = audio_for_clip(grid_clip, 75, 25.0)
    assert aligned.shape == (75, 4, 80)
    assert np.isfinite(aligned).all()
    energy = aligned.mean(axis=(1, 2))
    leading, middle = energy[:5].mean(), energy[25:50].mean()
    assert leading < middle - 2.0
