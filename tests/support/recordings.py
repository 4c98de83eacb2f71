"""Reading what the API serves of a meeting's recording and its final transcript."""
from __future__ import annotations

import io

import av
import numpy as np

from functions.common.events import SAMPLE_RATE
from local.stack_client import RunningStack, wait_for


def wav_samples(wav: bytes) -> np.ndarray:
    """The int16 samples of a WAV file, as any player would read them (PyAV, i.e. FFmpeg)."""
    with av.open(io.BytesIO(wav)) as container:
        stream = container.streams.audio[0]
        assert (stream.rate, stream.channels) == (SAMPLE_RATE, 1)
        return np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(stream)])


def recording_of(stack: RunningStack, user: str, meeting: str) -> np.ndarray:
    response = stack.api("GET", f"/recording/{user}/{meeting}", user)
    assert response.status_code == 200, response.text
    return wav_samples(response.content)


def final_transcript(stack: RunningStack, user: str, meeting: str, timeout: float = 240) -> dict:
    """The meeting's transcript once it is the final one."""
    return wait_for(lambda: (t := stack.transcript(user, meeting))["transcript"] == "final" and t, timeout,
                    f"the final transcript of {meeting}")  # fmt: skip
