"""Log-mel filterbank features as the reference RNN-T computes them (pytorch/parts/features.py,
FilterbankFeatures with the rnnt.toml input_eval settings), without librosa or torchaudio.

waveform (float32 in [-1, 1), soundfile) -> pre-emphasis 0.97 -> torch.stft (n_fft 512, hop 160,
window 320 Hann (symmetric), centred, reflect padding) -> power -> + dither^2 (the reference's
deterministic dithering) -> 80 Slaney mel filters (librosa.filters.mel defaults, rebuilt here) ->
log(x + 1e-20) -> frame splicing 3 (stack 3 consecutive frames, keep every third) -> per-feature
mean/std normalisation over the valid frames (std unbiased, + 1e-5).

The reference adds the 1e-5 inside its per-utterance loop, i.e. once per utterance of the batch;
the reference SUT always runs batch 1, so it is added once here, per utterance.
"""
from __future__ import annotations

import math

import numpy as np
import torch

SAMPLE_RATE = 16000
WINDOW_SIZE = 0.02
WINDOW_STRIDE = 0.01
N_FFT = 512
N_MELS = 80
FRAME_SPLICING = 3
DITHER = 1e-5
PREEMPH = 0.97
WIN_LENGTH = int(SAMPLE_RATE * WINDOW_SIZE)   # 320
HOP_LENGTH = int(SAMPLE_RATE * WINDOW_STRIDE)  # 160
FEATURES = N_MELS * FRAME_SPLICING             # 240 encoder inputs


def _hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mel = f / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float32: Slaney-scale triangles with Slaney area normalisation,
    the filters librosa.filters.mel builds with its defaults (htk=False, norm='slaney'); bit-equal
    to librosa 0.11.0 for the RNN-T settings (tests/test_rnnt_unit.py)."""
    fmax = sr / 2 if fmax is None else fmax
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    weights = np.zeros((n_mels, fft_freqs.size), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    return (weights * enorm[:, None]).astype(np.float32)


_FB = torch.from_numpy(mel_filterbank()).unsqueeze(0)
_WINDOW = torch.hann_window(WIN_LENGTH, periodic=False)


def n_frames(n_samples: int) -> int:
    """Valid feature frames of an utterance after splicing (the reference's get_seq_len)."""
    return math.ceil(math.ceil(n_samples / HOP_LENGTH) / FRAME_SPLICING)


def features(waveform: np.ndarray) -> np.ndarray:
    """float32 (frames, 240) features of one utterance."""
    x = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)).unsqueeze(0)
    seq = n_frames(x.shape[1])
    x = torch.cat((x[:, :1], x[:, 1:] - PREEMPH * x[:, :-1]), dim=1)
    spec = torch.stft(x, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, center=True,
                      window=_WINDOW, return_complex=True)
    power = torch.view_as_real(spec).pow(2).sum(-1) + DITHER ** 2
    x = torch.log(torch.matmul(_FB, power) + 1e-20)       # (1, 80, T)
    seq_frames = [x]
    for n in range(1, FRAME_SPLICING):
        shifted = torch.zeros_like(x)
        shifted[:, :, :-n] = x[:, :, n:]
        seq_frames.append(shifted)
    x = torch.cat(seq_frames, dim=1)[:, :, ::FRAME_SPLICING]  # (1, 240, ceil(T/3))
    valid = x[:, :, :seq]
    mean = valid.mean(dim=2, keepdim=True)
    std = valid.std(dim=2, keepdim=True) + 1e-5
    x = ((x - mean) / std)[:, :, :seq]
    return x[0].T.contiguous().numpy()
