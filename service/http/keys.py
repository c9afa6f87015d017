"""The API keys a server accepts: GRADSERVE_API_KEY, GRADSERVE_API_KEYS and GRADSERVE_API_KEYS_FILE,
all at once, so a new key can be handed out before the old one is withdrawn.

The file is re-read when it changes: a Kubernetes Secret mounted as a volume is updated by
swapping a symlink, so the file is checked by a `stat` of the path it resolves to (its inode,
size and times), at most once every CHECK_EVERY_S, on the way of a request. A file that cannot
be read, or holds no key, is an error when the server starts; later, the keys last read are kept
and the failure is logged.

A key is 16 to 4096 characters of printable ASCII without spaces, not starting with `#` (what
a Bearer token may hold, the same bytes however a client encodes its header; a line of the file
starting with `#` is a comment). The file is read as UTF-8, a byte
order mark dropped and each line trimmed (so a file saved by Notepad, with CRLF line ends,
works); a key that breaks the rule is refused by its line number, never shown: at start the
server does not start, later the whole new version is refused (the keys last read are kept),
so a file caught half-written never makes fewer than 16 first characters of a key a key.
The same rule holds for GRADSERVE_API_KEY and GRADSERVE_API_KEYS.

A key is never logged: the access log names the key of a request by its fingerprint.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from pathlib import Path

from service.settings import Settings

log = logging.getLogger("gradserve")

#: seconds between two looks at the key file
CHECK_EVERY_S = 1.0

#: the fewest characters a key may have: a torn write or a typo must not make a guessable key
MIN_KEY_CHARS = 16
#: the most (a header line holding it stays far below any server's bound)
MAX_KEY_CHARS = 4096
#: a key's characters: printable ASCII but the space (RFC 6750's b64token allows fewer)
_KEY = re.compile(rb"[\x21-\x7e]+")


class KeyFileError(Exception):
    """The key file cannot be read or holds no key, or a key setting is set but empty."""


def fingerprint(key: bytes) -> str:
    """A key's name in logs: the first 8 hex digits of its SHA-256 (`printf %s KEY | sha256sum`)."""
    return hashlib.sha256(key).hexdigest()[:8]


def checked_key(key: str, where: str) -> bytes:
    """`key` (trimmed already) as bytes, or KeyFileError naming `where` it is, never the key."""
    if len(key) < MIN_KEY_CHARS:
        raise KeyFileError(
            f"{where} is a key {len(key)} characters long: a key needs at least {MIN_KEY_CHARS}"
        )
    if len(key) > MAX_KEY_CHARS:
        raise KeyFileError(f"{where} is a key {len(key)} characters long: a key has at most {MAX_KEY_CHARS}")
    if key.startswith("#"):  # (in the key file such a line is a comment: a key is a key everywhere)
        raise KeyFileError(f"{where} is a key that starts with #: a key may not")
    data = key.encode("utf-8")
    if not _KEY.fullmatch(data):
        raise KeyFileError(f"{where} holds a character a key may not: printable ASCII only, without spaces")
    return data


def read_key_file(path: Path) -> list[bytes]:
    """The keys in `path`, one a line; blank lines and lines starting with # are ignored.
    KeyFileError for a file that cannot be read, holds no key, or a key that breaks the rule."""
    name = f"the API key file {str(path)!r} (GRADSERVE_API_KEYS_FILE)"
    try:
        text = path.read_bytes().decode("utf-8-sig")  # (a byte order mark dropped)
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{name} cannot be read: {exc}") from None
    keys = [
        checked_key(line.strip(), f"line {number} of {name}")
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#")
    ]
    if not keys:
        raise KeyFileError(f"{name} holds no key")
    return keys


def _stamp(path: Path) -> tuple[int, ...]:
    """What changes when the file (the one its path resolves to) is replaced or written."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class KeyRing:
    """The keys accepted now: those of the settings, and those last read from the file."""

    def __init__(self, fixed: list[bytes], path: Path | None = None) -> None:
        self.fixed, self.path = fixed, path
        self.keys: list[tuple[bytes, str]] = []
        self._stamp: tuple[int, ...] | None = None
        self._failure = ""  # the last failure to read the file, logged once
        self._checked = time.monotonic()
        from_file: list[bytes] = []
        if path is not None:
            try:
                self._stamp = _stamp(path)
            except OSError as exc:
                raise KeyFileError(
                    f"the API key file {str(path)!r} (GRADSERVE_API_KEYS_FILE) cannot be read: {exc}"
                ) from None
            from_file = read_key_file(path)
        self._use(from_file)

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing | None:
        """The settings' keys; None when none is configured (then no key is asked for).
        Raises KeyFileError for a key file that cannot be read or holds no key."""
        fixed: list[bytes] = []
        for name, value in (
            ("GRADSERVE_API_KEY", settings.api_key),
            ("GRADSERVE_API_KEYS", settings.api_keys),
        ):
            if value is None:
                continue
            text = value.get_secret_value().removeprefix("\ufeff")
            if not any(key.strip() for key in text.split(",")):  # an empty secret must not turn the keys off
                raise KeyFileError(f"{name} is set but holds no key: unset it to ask for none")
            several = name == "GRADSERVE_API_KEYS"
            given = [key.strip() for key in text.split(",") if key.strip()] if several else [text.strip()]
            fixed += [
                checked_key(key, name if len(given) == 1 else f"key {number} of {name}")
                for number, key in enumerate(given, 1)
            ]
        if not fixed and settings.api_keys_file is None:
            return None
        return cls(fixed, settings.api_keys_file)

    def _use(self, from_file: list[bytes]) -> None:
        keys = dict.fromkeys([*self.fixed, *from_file])  # (in order, once each)
        self.keys = [(key, fingerprint(key)) for key in keys]

    def match(self, token: bytes) -> str | None:
        """The fingerprint of the key `token` is (the header's bytes as sent), or None. Every
        key is compared, each in constant time, whichever matches."""
        self.refresh()
        found = None
        for key, name in self.keys:
            if hmac.compare_digest(token, key):
                found = name
        return found

    def refresh(self, now: float | None = None) -> None:
        """Re-read the file if it changed, unless it was looked at less than CHECK_EVERY_S ago."""
        now = time.monotonic() if now is None else now
        if self.path is None or now - self._checked < CHECK_EVERY_S:
            return
        self._checked = now
        try:
            stamp = _stamp(self.path)
            if stamp == self._stamp:
                return
            from_file = read_key_file(self.path)
        except (OSError, KeyFileError) as exc:
            failure = str(exc)
            if failure != self._failure:  # once, not every second
                self._failure = failure
                log.error("%s; the keys read before are still accepted", failure)
            return
        self._stamp, self._failure = stamp, ""
        before = {name for _, name in self.keys}
        self._use(from_file)
        after = {name for _, name in self.keys}
        log.warning(
            "API keys re-read from %s: %d accepted (added %s, withdrawn %s, by fingerprint)",
            self.path,
            len(self.keys),
            sorted(after - before) or "none",
            sorted(before - after) or "none",
        )
