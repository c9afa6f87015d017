"""The client's defaults, in one place."""

from __future__ import annotations

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
BASE_URL_ENV = "GRADSERVE_URL"
API_KEY_ENV = "GRADSERVE_API_KEY"

DEFAULT_TIMEOUT = 60.0  # seconds; an SGD run can take a while
DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY = 0.5  # seconds, doubled each attempt
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0  # a server's Retry-After is honoured up to this

#: a NumPy array with at least this many elements travels base64-encoded
BASE64_MIN_ELEMENTS = 256


def install_hint(extra: str) -> str:
    """How to install an extra: from an index once the package is published, or from a checkout."""
    return f"pip install 'gradserve[{extra}]' (from a checkout of the source: pip install '.[{extra}]')"
