"""Make the evaluation set: short meetings spoken by espeak-ng, under conditions that vary.

Run once by a developer; the outputs are committed next to this script:

    python -m local.evalset.make_evalset

For each recording NAME:

- NAME.ogg:  mono Ogg Opus at 16 kHz, as local/sample/meeting.ogg;
- NAME.txt:  the true text, one turn per line;
- NAME.json: the conditions it was made under and its turns, with speaker and start/end
  seconds in NAME.ogg.

Why a second set: local/sample/ is what the engines' settings were tuned on, so its WER
flatters them. These recordings differ from it in voices and accents (some of them
espeak-ng's German, French, Hindi and Spanish voices reading English), speed, noise,
a telephone band and how quickly people take turns, so they show how far a change
carries over. Which half is for tuning and which is held out is fixed in
local/evalset/__init__.py (SPLITS).

As in the sample, the text avoids digits, names and words with common alternate spellings
(British or American, one word or two), and contractions, so that a transcript can be
compared with it word for word. Everything is deterministic: espeak-ng's output is fixed
for a voice and speed, pauses and noise come from seeded generators, and sox's filter has
no randomness, so rerunning the script reproduces the same files.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from local.evalset import SPLITS
from local.sample import make_sample as sample
from local.sample.make_sample import ESPEAK_RATE

HERE = Path(__file__).resolve().parent
BIT_RATE = 24_000  # keeps the whole set small; speech at 16 kHz stays clear at this rate
LEAD_IN_SECONDS = 0.5
PEAK = 0.9  # the mixed recording is scaled to this peak, so noise never clips
TELEPHONE_BAND = "300-3400"  # Hz, the classic narrowband telephone channel
BABBLE_TALKERS = 6


@dataclass(frozen=True)
class Voice:
    espeak: str  # espeak-ng voice and variant, e.g. "en-gb-scotland+f1"
    wpm: int  # speaking rate, words per minute


@dataclass(frozen=True)
class Script:
    """One recording's recipe: who speaks how, what they say, and what the channel does to it."""

    name: str
    speakers: dict[str, Voice]
    turns: list[tuple[str, str]]  # (speaker, text)
    pauses: tuple[float, float]  # seconds between turns, drawn uniformly from this range
    noise: str = "none"  # "none", "pink", "brown" or "babble"
    snr_db: float | None = None  # speech to noise, measured over the speech only
    telephone: bool = False  # band-pass to TELEPHONE_BAND after the noise is mixed in
    seed: int = 0  # for the pauses and the noise
    notes: list[str] = field(default_factory=list)  # what else is special about it

    def conditions(self) -> dict:
        return {
            "speakers": {s: {"voice": v.espeak, "wpm": v.wpm} for s, v in self.speakers.items()},
            "pauses_s": list(self.pauses),
            "noise": self.noise,
            "snr_db": self.snr_db,
            "telephone": self.telephone,
            "notes": self.notes,
        }

    def description(self) -> str:
        voices = ", ".join(f"{v.espeak} at {v.wpm} wpm" for v in self.speakers.values())
        channel = "clean" if self.noise == "none" else f"{self.noise} noise at {self.snr_db:g} dB SNR"
        if self.telephone:
            channel += f", telephone band {TELEPHONE_BAND} Hz"
        parts = [f"{len(self.speakers)} speakers ({voices})", channel,
                 f"pauses {self.pauses[0]:g}-{self.pauses[1]:g} s", *self.notes]  # fmt: skip
        return "; ".join(parts)


SCRIPTS = [
    Script(
        name="standup_clean",
        speakers={"A": Voice("en-us+m1", 165), "B": Voice("en-gb-x-rp+f2", 175)},
        pauses=(0.4, 1.0),
        seed=11,
        turns=[
            ("A", "Good afternoon. Shall we go through the updates before the review?"),
            ("B", "Yes, please. I can start if that works for you."),
            ("A", "Go ahead."),
            ("B", "This week I cleaned up the old reports and moved them to the shared folder. "
                  "The team can find them much faster now."),
            ("A", "That is helpful. Were there any reports we should delete?"),
            ("B", "A few of them were empty, so I removed those. The rest are sorted by month."),
            ("A", "Good. On my side, I talked to the sales team about the new price list. "
                  "They want it ready before the end of the month."),
            ("B", "Is that possible with the current plan?"),
            ("A", "I think so, but we need the final figures from finance first."),
            ("B", "I will ask them today and send you what they say."),
            ("A", "Thank you. Then the last thing is the training session next week."),
            ("B", "I have booked the large room for the whole morning."),
            ("A", "Perfect. Let us stop here and get some lunch."),
        ],
    ),
    Script(
        name="support_call",
        speakers={"A": Voice("en-gb-x-gbcwmd+m5", 155), "B": Voice("en-us+f4", 170)},
        pauses=(0.3, 0.8),
        noise="brown",
        snr_db=10,
        telephone=True,
        seed=12,
        notes=["a long run-on turn without full stops"],
        turns=[
            ("A", "Hello, you are speaking with customer support. How can I help you today?"),
            ("B", "Hello. I am calling because our team is not able to open the shared calendar "
                  "since this morning."),
            ("A", "I am sorry to hear that. Does it show an error message, or does the page stay blank?"),
            ("B", "It stays blank for a long time, and then it asks us to sign in again."),
            ("A", "Thank you. Have you tried clearing the browser history and signing in again?"),
            ("B", "Yes, we tried that on several computers and nothing changed."),
            ("A", "In that case I think the problem is on our side because we moved the calendars "
                  "to a new server last night and some of the old links still point to the place "
                  "where they used to be so I will reset the links for your whole team and send you "
                  "a message when it is done"),
            ("B", "That would be great. How long will it take?"),
            ("A", "It should be ready within the hour."),
            ("B", "Thank you for your help."),
            ("A", "You are welcome. Have a good day."),
        ],
    ),
    Script(
        name="design_review",
        speakers={"A": Voice("de+m2", 140), "B": Voice("en-029+f3", 175), "C": Voice("en-gb-scotland+m3", 185)},
        pauses=(0.2, 0.6),
        noise="pink",
        snr_db=20,
        seed=13,
        notes=["a German voice reading English"],
        turns=[
            ("A", "Thank you both for coming. Today we look at the new design for the front page."),
            ("B", "I like the bigger pictures, but the text feels a little small."),
            ("C", "I agree. On a phone it is hard to read without zooming in."),
            ("A", "Good point. We can make the text larger and keep the pictures as they are."),
            ("B", "What about the menu at the top? Some people said they could not find the search."),
            ("C", "We could move the search into the middle of the page, right under the main title."),
            ("A", "That sounds fine to me. Who will make the changes?"),
            ("B", "I can do the text and the menu this week."),
            ("C", "And I will test it with a few customers at the end of the week."),
            ("A", "Very good. Then we meet again next week to look at the results."),
        ],
    ),
    Script(
        name="quick_sync",
        speakers={"A": Voice("en-us+klatt", 200), "B": Voice("hi+f2", 150), "C": Voice("en-gb+m7", 190)},
        pauses=(0.1, 0.3),
        noise="babble",
        snr_db=10,
        seed=14,
        notes=["short turns, quick turn-taking", "a Hindi voice reading English"],
        turns=[
            ("A", "Are we ready to start?"),
            ("B", "Almost. Just a moment."),
            ("C", "I am here."),
            ("A", "Good. A quick check on the release."),
            ("B", "The build is green."),
            ("C", "The tests are passing too."),
            ("A", "What about the notes for the customers?"),
            ("B", "They are still a draft."),
            ("C", "I can finish them."),
            ("A", "When?"),
            ("C", "Before lunch."),
            ("A", "Great. Any risks?"),
            ("B", "The sign in page is slow."),
            ("C", "Only on old phones."),
            ("A", "Can we fix it today?"),
            ("B", "Probably not."),
            ("C", "Then we ship without the fix."),
            ("A", "Agreed. Who tells the support team?"),
            ("B", "I will."),
            ("A", "And the new help pages?"),
            ("C", "They went live this morning."),
            ("B", "I saw them. They look nice."),
            ("A", "Did anyone check the links?"),
            ("C", "Not yet."),
            ("B", "I can do that after this call."),
            ("A", "Thanks. Anything else?"),
            ("C", "Nothing from me."),
            ("B", "Me neither."),
            ("A", "Then we are done. See you later."),
        ],
    ),
    Script(
        name="office_move",
        speakers={
            "A": Voice("en-gb-scotland+f1", 160),
            "B": Voice("en-us+m3", 150),
            "C": Voice("en-gb-x-gbclan+m6", 170),
        },
        pauses=(0.4, 1.0),
        seed=21,
        notes=["a long run-on turn without full stops"],
        turns=[
            ("A", "Let us plan the move to the new office."),
            ("B", "Do we know when the building will be ready?"),
            ("A", "The owner said it should be ready at the end of next month."),
            ("C", "Then we should start packing the week before."),
            ("B", "Who is going to order the new desks?"),
            ("C", "I can do that because I already spoke with the furniture shop and they told me "
                  "that they need a few weeks to deliver everything so if we order this week the "
                  "desks will arrive before we move and nobody will have to work from the kitchen "
                  "table at home while we wait"),
            ("A", "That would be good. What about the phones and the network?"),
            ("B", "I will call the provider tomorrow and ask them to connect the lines early."),
            ("A", "Please also check the parking for visitors."),
            ("C", "There is a large garage under the building, so that should be easy."),
            ("A", "Great. Let us meet again next week and see where we are."),
        ],
    ),
    Script(
        name="incident_call",
        speakers={"A": Voice("en-029+m2", 165), "B": Voice("en-gb-x-rp+m4", 165)},
        pauses=(0.3, 0.8),
        noise="pink",
        snr_db=20,
        telephone=True,
        seed=22,
        notes=["a long run-on turn without full stops"],
        turns=[
            ("A", "Hello, are you there? I can barely hear you."),
            ("B", "Yes, I am here. The line is not great, but go on."),
            ("A", "The payment service stopped working about an hour ago."),
            ("B", "Are all customers affected, or only some of them?"),
            ("A", "Only the ones who pay by card. Bank transfers still work."),
            ("B", "Did anything change today?"),
            ("A", "We released a small update this morning that changed how we store the card "
                  "details and I suspect the new code sends the wrong key to the payment provider "
                  "so every request is rejected before it even reaches the bank"),
            ("B", "Can we go back to the old version?"),
            ("A", "Yes, that is the fastest way. I will start it now."),
            ("B", "Good. I will write a short note for the support team, so they know what to tell people."),
            ("A", "Thank you. I will call you back when it is done."),
        ],
    ),
    Script(
        name="budget_talk",
        speakers={"A": Voice("fr+m4", 140), "B": Voice("es+m6", 130), "C": Voice("en-us+f5", 165)},
        pauses=(0.3, 0.8),
        noise="brown",
        snr_db=5,
        seed=23,
        notes=["French and Spanish voices reading English"],
        turns=[
            ("A", "Let us talk about the budget for the next quarter."),
            ("C", "Sure. The main question is how much we spend on travel."),
            ("B", "We spent too much last year."),
            ("A", "I agree. Most meetings can happen on video calls instead."),
            ("C", "But some customers want to see us in person."),
            ("B", "Then only for the large customers."),
            ("A", "That seems fair. What about new laptops for the team?"),
            ("C", "Half of the team needs new ones. Their machines are very slow."),
            ("B", "Can we buy them in the spring?"),
            ("A", "Yes, that helps with the budget for this quarter."),
            ("C", "I will write down the plan and share it with everyone."),
            ("B", "Thank you."),
        ],
    ),
    Script(
        name="hiring_chat",
        speakers={"A": Voice("en-us-nyc+m7", 210), "B": Voice("en-gb-x-gbcwmd+f3", 200)},
        pauses=(0.1, 0.3),
        noise="babble",
        snr_db=12,
        seed=24,
        notes=["short turns, quick turn-taking", "fast speech"],
        turns=[
            ("A", "Did you read the notes from the interview?"),
            ("B", "Yes, last night."),
            ("A", "What did you think?"),
            ("B", "Strong on the technical side."),
            ("A", "I agree. But the answers about working with others were short."),
            ("B", "Maybe just nervous."),
            ("A", "Could be."),
            ("B", "Should we invite them back?"),
            ("A", "For another talk, yes."),
            ("B", "With the whole team this time?"),
            ("A", "No, that is too many people."),
            ("B", "Then just us and the manager."),
            ("A", "Fine. Can you find a time next week?"),
            ("B", "I will look at the calendars."),
            ("A", "And we should prepare better questions."),
            ("B", "About real projects, not puzzles."),
            ("A", "Exactly. Ask how they solved a hard problem."),
            ("B", "And what they would change now."),
            ("A", "Good. Can you write them down?"),
            ("B", "I will send them to you tonight."),
            ("A", "Thanks. Talk to you tomorrow."),
        ],
    ),
]

# What babble talkers say: unrelated chatter, played backwards so it sounds like speech
# without adding words a transcript could pick up.
BABBLE_TEXT = [
    "The coffee machine on the second floor has been broken for a while and nobody seems to care.",
    "We should book the tables for the summer party before all the good places are gone.",
    "My train was late again this morning, so I missed the start of the planning session.",
    "Have you seen the new chairs in the kitchen? They are much more comfortable than the old ones.",
    "The printer keeps asking for paper even when the tray is full, which is driving me mad.",
    "I heard the garden on the roof will open again once the weather gets warmer.",
]


def speak(voice: Voice, text: str) -> np.ndarray:
    """The turn as 22.05 kHz float samples in [-1, 1], with espeak-ng's padding silence trimmed."""
    return sample.speak(voice.espeak, text, voice.wpm).astype(np.float64) / 32768.0


def build_speech(script: Script, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """The meeting's clean speech and its timeline of turns."""
    pieces = [np.zeros(int(LEAD_IN_SECONDS * ESPEAK_RATE))]
    position = len(pieces[0])
    timeline = []
    for index, (speaker, text) in enumerate(script.turns):
        speech = speak(script.speakers[speaker], text)
        timeline.append({
            "speaker": speaker,
            "text": text,
            "start": round(position / ESPEAK_RATE, 3),
            "end": round((position + len(speech)) / ESPEAK_RATE, 3),
        })
        last = index == len(script.turns) - 1
        pause_seconds = LEAD_IN_SECONDS if last else rng.uniform(*script.pauses)
        pause = np.zeros(int(pause_seconds * ESPEAK_RATE))
        pieces += [speech, pause]
        position += len(speech) + len(pause)
    return np.concatenate(pieces), timeline


def coloured_noise(length: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power falls as 1/f**exponent (1: pink, 2: brown), shaped in the
    frequency domain; nothing below 20 Hz, which only moves the loudspeaker."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.fft.rfftfreq(length, 1 / ESPEAK_RATE)
    gain = np.zeros_like(frequencies)
    audible = frequencies >= 20
    gain[audible] = frequencies[audible] ** (-exponent / 2)
    return np.fft.irfft(spectrum * gain, length)


def babble(length: int, rng: np.random.Generator) -> np.ndarray:
    """Several talkers at once, each a loop of reversed espeak-ng speech starting at a random place."""
    voices = ["en-us+m2", "en-gb+f1", "en-029+m4", "en-gb-x-rp+f4", "en-us+m6", "en-gb-scotland+f5"]
    total = np.zeros(length)
    for talker in range(BABBLE_TALKERS):
        text = " ".join(BABBLE_TEXT[(talker + k) % len(BABBLE_TEXT)] for k in range(len(BABBLE_TEXT)))
        speech = speak(Voice(voices[talker % len(voices)], 170), text)[::-1]
        speech = speech / np.sqrt(np.mean(speech**2))
        looped = np.tile(speech, length // len(speech) + 2)
        offset = int(rng.integers(len(speech)))
        total += looped[offset : offset + length]
    return total


def add_noise(speech: np.ndarray, timeline: list[dict], script: Script, rng: np.random.Generator) -> np.ndarray:
    """`speech` with the script's noise mixed in at its SNR (speech power over the turns only,
    so pauses do not make the speech look quieter)."""
    if script.noise == "none":
        return speech
    if script.noise == "babble":
        noise = babble(len(speech), rng)
    else:
        noise = coloured_noise(len(speech), {"pink": 1.0, "brown": 2.0}[script.noise], rng)
    spoken = np.concatenate([speech[int(t["start"] * ESPEAK_RATE) : int(t["end"] * ESPEAK_RATE)] for t in timeline])
    speech_rms = np.sqrt(np.mean(spoken**2))
    noise_rms = np.sqrt(np.mean(noise**2))
    return speech + noise * (speech_rms / noise_rms) / 10 ** (script.snr_db / 20)


def telephone(samples: np.ndarray) -> np.ndarray:
    """Band-pass to the telephone band with sox's windowed-sinc filter (no dither, so deterministic)."""
    filtered = subprocess.run(
        ["sox", "-R", "-D",
         "-t", "raw", "-r", str(ESPEAK_RATE), "-e", "floating-point", "-b", "64", "-c", "1", "-",
         "-t", "raw", "-e", "floating-point", "-b", "64", "-",
         "sinc", TELEPHONE_BAND],
        input=samples.astype("<f8").tobytes(),
        check=True,
        capture_output=True,
    ).stdout  # fmt: skip
    return np.frombuffer(filtered, dtype="<f8")[: len(samples)]


def make(script: Script) -> float:
    """Write the recording's three files; its length in seconds."""
    rng = np.random.default_rng(script.seed)
    speech, timeline = build_speech(script, rng)
    mixed = add_noise(speech, timeline, script, rng)
    if script.telephone:
        mixed = telephone(mixed)
    samples = np.round(mixed * (PEAK / np.max(np.abs(mixed))) * 32767).astype(np.int16)
    sample.write_ogg(samples, HERE / f"{script.name}.ogg", BIT_RATE)
    (HERE / f"{script.name}.txt").write_text("\n".join(turn["text"] for turn in timeline) + "\n")
    duration = round(len(samples) / ESPEAK_RATE, 3)
    meta = {"name": script.name, "description": script.description(), "conditions": script.conditions(),
            "duration": duration, "turns": timeline}  # fmt: skip
    (HERE / f"{script.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return duration


def main() -> None:
    names = [script.name for script in SCRIPTS]
    in_splits = [name for split in SPLITS.values() for name in split]
    assert sorted(names) == sorted(in_splits), "every recording belongs to exactly one split"
    for script in SCRIPTS:
        seconds = make(script)
        size = (HERE / f"{script.name}.ogg").stat().st_size
        print(f"{script.name}.ogg: {seconds:.1f} s, {len(script.turns)} turns, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
