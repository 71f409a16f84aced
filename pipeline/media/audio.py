"""Log-mel audio features (numpy only) aligned frame for frame with a video clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.media.video import read_audio

SAMPLE_RATE = 16000
N_MELS = 80
HOP_MS = 10.0
WIN_MS = 25.0
LOG_FLOOR = 1e-6


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int, n_fft: int, sample_rate: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular mel filters ``[n_mels, n_fft // 2 + 1]`` with unit peak, edges equally spaced in mel."""
    fmax = sample_rate / 2.0 if fmax is None else fmax
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - bins[None, :]) / np.maximum(upper - centre, 1e-9)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    n_mels: int = N_MELS,
    hop_ms: float = HOP_MS,
    win_ms: float = WIN_MS,
) -> np.ndarray:
    """Natural-log mel power spectrogram ``[frames, n_mels]``; frame i is centred on sample i * hop (Hann window)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    hop = int(round(sample_rate * hop_ms / 1000.0))
    win = int(round(sample_rate * win_ms / 1000.0))
    n_fft = 1 << (win - 1).bit_length()
    padded = np.pad(audio, (n_fft // 2, n_fft // 2), mode="reflect" if audio.size > n_fft // 2 else "constant")
    n_frames = 1 + audio.size // hop
    starts = np.arange(n_frames) * hop
    window = np.zeros(n_fft, dtype=np.float32)
    offset = (n_fft - win) // 2
    window[offset : offset + win] = np.hanning(win + 1)[:-1]
    frames = padded[starts[:, None] + np.arange(n_fft)[None, :]] * window
    power = np.abs(np.fft.rfft(frames, n=n_fft, axis=1)) ** 2
    mel = power @ mel_filterbank(n_mels, n_fft, sample_rate).T
    return np.log(mel + LOG_FLOOR).astype(np.float32)


def to_db(log_mel_features: np.ndarray) -> np.ndarray:
    """Natural-log mel power (what ``prepare --audio`` stores) in decibels: 10 log10(power) = ln(power) * 10 / ln 10."""
    return np.asarray(log_mel_features, np.float32) * np.float32(10.0 / np.log(10.0))


def cmvn(clips: np.ndarray, lengths: np.ndarray | None = None, eps: float = 1e-10) -> np.ndarray:
    """Per-clip mean/variance normalisation of aligned mel ``[N, T, k, n_mels]`` (as Kim et al.'s CMVN): each mel bin
    minus its mean over the clip's real frames, divided by its standard deviation; padded frames stay zero."""
    clips = np.asarray(clips, np.float32)
    out = np.zeros_like(clips)
    lengths = np.full(len(clips), clips.shape[1]) if lengths is None else np.asarray(lengths)
    for i, (clip, n) in enumerate(zip(clips, lengths)):
        if n < 1:
            continue
        frames = clip[:n].reshape(-1, clip.shape[-1])
        out[i, :n] = ((frames - frames.mean(axis=0)) / (frames.std(axis=0) + eps)).reshape(clip[:n].shape)
    return out


def db_cmvn(clips: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    """The memory model's audio input: stored log-mel -> dB -> per-clip mean/variance normalisation."""
    return cmvn(to_db(clips), lengths)


def align_to_video(mel: np.ndarray, video_frames: int, fps: float, hop_ms: float = HOP_MS) -> np.ndarray:
    """Group mel frames per video frame: ``[video_frames, k, n_mels]`` with k = round(1000 / (fps * hop_ms)).

    Sub-frame i of video frame j is mel frame floor((j + i / k) * r), r = 1000 / (fps * hop_ms) mel frames per
    video frame (4j + i at 25 fps and 10 ms); indices past the end repeat the last mel frame.
    """
    if mel.ndim != 2 or mel.shape[0] == 0:
        raise ValueError(f"mel must be a non-empty [frames, n_mels] array, got shape {mel.shape}")
    ratio = 1000.0 / (fps * hop_ms)
    k = max(1, int(round(ratio)))
    index = np.floor((np.arange(video_frames)[:, None] + np.arange(k)[None, :] / k) * ratio).astype(np.int64)
    return mel[np.minimum(index, mel.shape[0] - 1)]


def audio_for_clip(path: Path | str, n_video_frames: int, fps: float, n_mels: int = N_MELS) -> np.ndarray:
    """Log-mel features of a clip's sound, aligned to its video: ``[n_video_frames, k, n_mels]``."""
    return align_to_video(log_mel(read_audio(path, SAMPLE_RATE), n_mels=n_mels), n_video_frames, fps)
