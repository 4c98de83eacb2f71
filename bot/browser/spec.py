"""A platform's data file: the probes its adapter relies on, and where each was seen.

The files live in platforms/<platform>.toml (or BOT_PLATFORMS_DIR), one per platform and
versioned, so a platform's UI change is an edit there, not in code. Every entry is a table
of `probes` (any one of which will do) and `seen`: what the entry was checked against, and
when. A file that lacks an entry, or has one in the wrong form, is refused when the bot
starts, not mid-join. What a probe can say is in probes.js, the one place that reads them.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHIPPED = Path(__file__).resolve().parent / "platforms"
PROBES_SCRIPT = Path(__file__).resolve().parent / "probes.js"
# Page states, in the order the admission wait believes them: an ending or a refusal shown
# beside the lobby or the meeting's controls wins, and the lobby wins over the controls (Meet
# and Zoom show Leave in the lobby too).
STATES = ("denied", "refused", "removed", "ended", "waiting_room", "in_meeting")
OPTIONAL_STATES = ("refused",)  # the platform refusing this browser outright (Meet only, so far)
# css:SELECTOR (optionally narrowed by " text:WORDS" or " label:WORDS": probes.js reads those);
# text:WORDS (page text, states only); attr:NAME (a participant's name read from the tile's attribute).
_CSS = re.compile(r"css:\S.*", re.S)
_TEXT = re.compile(r"text:\S.*", re.S)
_ATTR = re.compile(r"attr:[\w-]+")


class SpecError(ValueError):
    """A data file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Entry:
    probes: tuple[str, ...]  # any one of them finding something is enough
    seen: str  # what it was checked against, and when


NO_ENTRY = Entry((), "")


@dataclass(frozen=True)
class JoinSteps:
    dismiss: Entry  # prompts clicked away whenever they show, until the bot is in
    name_input: Entry
    passcode_input: Entry
    microphone_off: Entry
    camera_off: Entry
    join: Entry
    after_admission: Entry  # prompts clicked once in the meeting


@dataclass(frozen=True)
class PlatformSpec:
    platform: str
    version: int
    path: Path
    join: JoinSteps
    states: dict[str, Entry]
    leave_button: Entry
    leave_confirm: Entry
    participants: dict[str, Entry]  # tile, name, speaking

    def page_probes(self) -> dict[str, Any]:
        """What capture.js reads the page with."""
        return {
            "states": {state: list(entry.probes) for state, entry in self.states.items()},
            "participants": {key: list(entry.probes) for key, entry in self.participants.items()},
        }

    def describe(self, entry: Entry) -> str:
        """An entry's probes and the file's version, for a join error."""
        return f"looked for {' or '.join(entry.probes)}; {self.path.name} version {self.version}"


def load_spec(platform: str, directory: str | Path | None = None) -> PlatformSpec:
    path = Path(directory or SHIPPED) / f"{platform}.toml"
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"cannot read the {platform} data file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path} is not valid TOML: {exc}") from None
    reader = _Reader(path, data)
    if data.get("platform") != platform:
        raise SpecError(f"{path} describes {data.get('platform')!r}, not {platform!r}")
    clicked = (_CSS,)
    join = JoinSteps(
        dismiss=reader.entry("join.dismiss", clicked, required=False),
        name_input=reader.entry("join.name_input", clicked),
        passcode_input=reader.entry("join.passcode_input", clicked, required=False),
        microphone_off=reader.entry("join.microphone_off", clicked),
        camera_off=reader.entry("join.camera_off", clicked),
        join=reader.entry("join.join", clicked),
        after_admission=reader.entry("join.after_admission", clicked, required=False),
    )
    return PlatformSpec(
        platform=platform,
        version=reader.integer("version"),
        path=path,
        join=join,
        states={s: reader.entry(f"states.{s}", (_CSS, _TEXT), required=s not in OPTIONAL_STATES) for s in STATES},
        leave_button=reader.entry("leave.button", clicked),
        leave_confirm=reader.entry("leave.confirm", clicked, required=False),
        participants={
            "tile": reader.entry("participants.tile", clicked),
            "name": reader.entry("participants.name", (_CSS, _ATTR)),
            "speaking": reader.entry("participants.speaking", clicked),
        },
    )


class _Reader:
    """Typed access to dotted entries of one data file, with errors that name the entry."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self.data = data

    def _get(self, key: str) -> Any:
        value: Any = self.data
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def _fail(self, key: str, wanted: str) -> SpecError:
        return SpecError(f"{self.path}: `{key}` must be {wanted}")

    def integer(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(key, "an integer")
        return value

    def entry(self, key: str, forms: tuple[re.Pattern[str], ...], required: bool = True) -> Entry:
        value = self._get(key)
        if value is None and not required:
            return NO_ENTRY
        if not isinstance(value, dict) or set(value) != {"probes", "seen"}:
            raise self._fail(key, "a table of `probes` and `seen`")
        probes, seen = value["probes"], value["seen"]
        kinds = " or ".join(f'"{form.pattern.split(":")[0]}:..."' for form in forms)
        if not isinstance(probes, list) or not probes or not all(isinstance(p, str) and any(f.fullmatch(p) for f in forms) for p in probes):
            raise self._fail(f"{key}.probes", f"a list of {kinds} probes (at least one)")
        if not isinstance(seen, str) or not seen.strip():
            raise self._fail(f"{key}.seen", "a note of what the probes were checked against, and when")
        return Entry(tuple(probes), seen)
