"""Decode recordings into the engines' input format: float32 mono 16 kHz."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 16_000


def load_pcm_f32(path: str | Path) -> np.ndarray:
    """Decode any audio file PyAV reads into float32 mono 16 kHz samples in [-1, 1]."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    pieces = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            pieces.extend(resampler.resample(frame))
        pieces.extend(resampler.resample(None))  # flush what the resampler holds
    samples = np.concatenate([piece.to_ndarray().reshape(-1) for piece in pieces])
    return samples.astype(np.float32) / 32768.0
