"""A platform's data file: the selectors and texts its adapter relies on.

The files live in platforms/<platform>.toml (or BOT_PLATFORMS_DIR), one per platform and
versioned, so a platform's UI change is an edit there, not in code. A file that lacks an
entry, or has a probe in the wrong form, is refused when the bot starts, not mid-join.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHIPPED = Path(__file__).resolve().parent / "platforms"
STATES = ("in_meeting", "waiting_room", "denied", "removed", "ended")
PROBE_KINDS = ("css:", "text:")


class SpecError(ValueError):
    """A data file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class JoinSteps:
    dismiss: tuple[str, ...]
    name_input: str
    passcode_input: str | None
    microphone_off: str
    camera_off: str
    join: tuple[str, ...]
    after_admission: tuple[str, ...]


@dataclass(frozen=True)
class PlatformSpec:
    platform: str
    version: int
    path: Path
    join: JoinSteps
    states: dict[str, tuple[str, ...]]  # state -> probes: any one matching means that state
    leave_button: str
    leave_confirm: tuple[str, ...]
    participants: dict[str, str]  # tile, name, speaking probes

    def page_probes(self) -> dict[str, Any]:
        """What capture.js checks inside the page."""
        return {"states": {k: list(v) for k, v in self.states.items()}, "participants": self.participants}


def load_spec(platform: str, directory: str | Path | None = None) -> PlatformSpec:
    path = Path(directory or SHIPPED) / f"{platform}.toml"
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"cannot read the {platform} data file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path} is not valid TOML: {exc}") from None
    reader = _Reader(path, data)
    if reader.text("platform") != platform:
        raise SpecError(f"{path} describes {data.get('platform')!r}, not {platform!r}")
    join = JoinSteps(
        dismiss=reader.texts("join.dismiss"),
        name_input=reader.text("join.name_input"),
        passcode_input=reader.text("join.passcode_input", required=False),
        microphone_off=reader.text("join.microphone_off"),
        camera_off=reader.text("join.camera_off"),
        join=reader.texts("join.join", required=True),
        after_admission=reader.texts("join.after_admission"),
    )
    return PlatformSpec(
        platform=platform,
        version=reader.integer("version"),
        path=path,
        join=join,
        states={state: reader.probes(f"states.{state}") for state in STATES},
        leave_button=reader.text("leave.button"),
        leave_confirm=reader.texts("leave.confirm"),
        participants={key: reader.probe(f"participants.{key}", css_only=True) for key in ("tile", "name", "speaking")},
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

    def text(self, key: str, required: bool = True) -> Any:
        value = self._get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self._fail(key, "a non-empty string")
        return value

    def integer(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(key, "an integer")
        return value

    def texts(self, key: str, required: bool = False) -> tuple[str, ...]:
        value = self._get(key)
        if value is None and not required:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value) or (required and not value):
            raise self._fail(key, "a list of non-empty strings" + (" (at least one)" if required else ""))
        return tuple(value)

    def probe(self, key: str, css_only: bool = False) -> str:
        value = self.text(key)
        kinds = ("css:",) if css_only else PROBE_KINDS
        if not value.startswith(kinds):
            raise self._fail(key, " or ".join(f'"{k}..."' for k in kinds))
        return value

    def probes(self, key: str) -> tuple[str, ...]:
        values = self.texts(key, required=True)
        for value in values:
            if not value.startswith(PROBE_KINDS):
                raise self._fail(key, 'a list of "css:..." or "text:..." probes')
        return values
