"""The account a bot's browser runs as: never root where the machine allows it.

Chromium runs whatever a meeting page serves, with `--no-sandbox`. In a pod that is safe enough:
the bot runs as non-root with no capabilities. A bot started as root on one machine (`make up`
as root) instead runs Chromium and its X display as BROWSER_USER, an account of their own, so
that a page that breaks out of the renderer is neither root nor the bot: it cannot read the
bot's session key (another user's /proc/<pid>/environ) nor its files.

Playwright starts the browser itself, so it is given `run-as-browser-account` in Chromium's place:
that script hands Playwright's fresh profile folder to the account and becomes Chromium as it.
The account must be able to run both programs; where it cannot (no such account, no `setpriv`,
an executable it may not reach), the bot logs why and keeps the browser as it is.
"""
from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SWITCHER = Path(__file__).resolve().parent / "run-as-browser-account"
X11_SOCKETS = Path("/tmp/.X11-unix")  # where every X server's socket lives; a non-root Xvfb cannot make it
# What the browser is given of the bot's environment: never the bot's own configuration (its session key).
BROWSER_ENVIRON = ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "TMPDIR")


def browser_environ() -> dict[str, str]:
    """The browser's and its display's environment: the bot's, less everything but BROWSER_ENVIRON."""
    return {name: os.environ[name] for name in BROWSER_ENVIRON if name in os.environ}


@dataclass(frozen=True)
class BrowserAccount:
    name: str
    uid: int
    gid: int
    home: Path  # a private folder the account owns, for the browser's HOME and TMPDIR

    def browser_environ(self, chromium_path: str) -> dict[str, str]:
        """What `run-as-browser-account` needs besides the browser's own environment."""
        return {
            "HOME": str(self.home), "TMPDIR": str(self.home),
            "VEXA_BROWSER_UID": str(self.uid), "VEXA_BROWSER_GID": str(self.gid),
            "VEXA_BROWSER_EXECUTABLE": chromium_path,
        }  # fmt: skip

    def remove_home(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


def browser_account(name: str, executables: list[str]) -> BrowserAccount | None:
    """The account to run `executables` as; None where the bot runs them itself (logged if root)."""
    if os.geteuid() != 0 or not name:
        return None
    refusal = _refusal(name, executables)
    if refusal is not None:
        log.warning("browser.runs_as_root", extra={"browser_user": name, "reason": refusal})
        return None
    entry = pwd.getpwnam(name)
    X11_SOCKETS.mkdir(mode=0o1777, exist_ok=True)
    X11_SOCKETS.chmod(0o1777)  # as any X server expects it: everyone's, sticky
    home = Path(tempfile.mkdtemp(prefix="vexa-browser-"))
    os.chown(home, entry.pw_uid, entry.pw_gid)
    log.info("browser.account", extra={"browser_user": name, "uid": entry.pw_uid})
    return BrowserAccount(name, entry.pw_uid, entry.pw_gid, home)


def _refusal(name: str, executables: list[str]) -> str | None:
    """Why `name` cannot run the browser here, or None if it can."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return f"there is no account {name!r} (BROWSER_USER); `make up` creates it"
    if entry.pw_uid == 0:
        return f"{name!r} is root"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    resolved = [shutil.which(program) or program for program in executables]
    # Whether the account reaches and may run each program: asked as the account itself.
    try:
        check = subprocess.run(
            ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--",
             "sh", "-c", 'for p do test -x "$p" || { echo "$p"; exit 1; }; done', "sh", *resolved],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not check what {name!r} may run: {exc}"
    if check.returncode != 0:
        return f"{name!r} cannot run {check.stdout.strip() or check.stderr.strip()[:200]}"
    return None
