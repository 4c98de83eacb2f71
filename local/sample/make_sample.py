"""Make the sample meeting recording: a two-person stand-up spoken by espeak-ng.

Run once by a developer; the output is committed next to this script:

    python local/sample/make_sample.py

- meeting.ogg:  mono Ogg Opus at 16 kHz, what a file bot replays;
- meeting.txt:  the true text, one turn per line;
- meeting.json: the turns with speaker and start/end seconds in meeting.ogg.

espeak-ng output is deterministic for a fixed voice and speed, so rerunning
the script reproduces the same recording. The text avoids digits, names and
words with common alternate spellings, so a transcript can be compared with
it word for word. One long run-on turn has no sentence breaks, so the chunker
has to cut it at a forced point.
"""
from __future__ import annotations

import io
import json
import subprocess
import wave
from pathlib import Path

import av
import numpy as np

HERE = Path(__file__).resolve().parent
ESPEAK_RATE = 22_050  # espeak-ng always writes 22.05 kHz
OUTPUT_RATE = 16_000
SPEED_WPM = 165
VOICES = {"Alice": "en-us+f3", "Bob": "en-gb+m3"}
LEAD_IN_SECONDS = 0.5
# Pauses between turns, used in order: natural gaps of 0.4-1.2 s.
PAUSES = [0.7, 0.5, 1.0, 0.6, 1.2, 0.4, 0.9, 0.8, 0.5, 1.1, 0.6, 0.7]
SILENCE_LEVEL = 64  # samples quieter than this are the silence espeak-ng pads turns with

TURNS = [
    ("Alice", "Good morning. Let us start the daily meeting."),
    ("Bob", "Morning. Yesterday I finished the new search page and sent it for review."),
    ("Alice", "Great work. Did the review find any problems?"),
    ("Bob", "Only small ones. The buttons were too close together on small screens, "
            "so I moved them apart."),
    ("Alice", "That sounds good. On my side, I spent most of the day on the billing "
              "problem that customers reported last week."),
    ("Bob", "Did you find the cause?"),
    # The long monologue: no full stops, so no pause long enough for a natural cut.
    ("Alice", "I think so because the invoice was created twice when the payment took "
              "too long and the user reloaded the page so today I will add a check that "
              "stops the second request before it reaches the database and then I will "
              "write a test for it"),
    ("Bob", "That makes sense. Is anything blocking you right now?"),
    ("Alice", "Not right now, but I may need help from the design team tomorrow."),
    ("Bob", "I can ask them this afternoon."),
    ("Alice", "Thank you. Anything else before we finish?"),
    ("Bob", "No, that is all from me."),
    ("Alice", "Then let us get back to work. Have a nice day."),
]


def speak(voice: str, text: str, wpm: int = SPEED_WPM) -> np.ndarray:
    """The turn as 22.05 kHz int16 samples, with espeak-ng's padding silence trimmed."""
    wav_bytes = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(wpm), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        assert wav.getframerate() == ESPEAK_RATE and wav.getnchannels() == 1
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    loud = np.flatnonzero(np.abs(samples) > SILENCE_LEVEL)
    return samples[loud[0] : loud[-1] + 1]


def build_meeting() -> tuple[np.ndarray, list[dict]]:
    """The whole meeting's samples and its timeline of turns."""
    pieces = [np.zeros(int(LEAD_IN_SECONDS * ESPEAK_RATE), dtype=np.int16)]
    position = len(pieces[0])
    timeline = []
    for index, (speaker, text) in enumerate(TURNS):
        speech = speak(VOICES[speaker], text)
        timeline.append({
            "speaker": speaker,
            "text": text,
            "start": round(position / ESPEAK_RATE, 3),
            "end": round((position + len(speech)) / ESPEAK_RATE, 3),
        })
        # The last turn is followed by the same lead-out as the lead-in.
        pause_seconds = PAUSES[index] if index < len(PAUSES) else LEAD_IN_SECONDS
        pause = np.zeros(int(pause_seconds * ESPEAK_RATE), dtype=np.int16)
        pieces += [speech, pause]
        position += len(speech) + len(pause)
    return np.concatenate(pieces), timeline


def write_ogg(samples: np.ndarray, path: Path, bit_rate: int = 32_000) -> None:
    """Encode 22.05 kHz int16 samples as 16 kHz mono Ogg Opus."""
    # bitexact: a fixed Ogg serial number and no encoder version tag, so reruns match.
    with av.open(str(path), "w", format="ogg", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libopus", rate=OUTPUT_RATE, layout="mono")
        stream.bit_rate = bit_rate
        # Opus takes fixed-size frames: the resampler hands them out that way.
        resampler = av.AudioResampler(format="s16", layout="mono", rate=OUTPUT_RATE,
                                      frame_size=stream.codec_context.frame_size or 320)
        source = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        source.sample_rate = ESPEAK_RATE
        for frame in resampler.resample(source) + resampler.resample(None):
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def main() -> None:
    samples, timeline = build_meeting()
    write_ogg(samples, HERE / "meeting.ogg")
    (HERE / "meeting.txt").write_text("\n".join(turn["text"] for turn in timeline) + "\n")
    (HERE / "meeting.json").write_text(json.dumps(timeline, indent=2) + "\n")
    print(f"meeting.ogg: {len(samples) / ESPEAK_RATE:.1f} s, {len(timeline)} turns")


if __name__ == "__main__":
    main()
