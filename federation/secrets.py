"""Reading a secret (an API token) from a file or an environment variable.

A file wins over the environment when both are configured: a mounted Kubernetes
Secret can be rotated in place, an environment variable cannot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class SecretError(Exception):
    """A configured secret file cannot be read; the message names the file."""


@dataclass(frozen=True)
class Secret:
    value: str = ""   # "" when nothing is configured
    origin: str = ""  # where it came from, for log lines ("file /run/x", "environment variable X")

    def __bool__(self) -> bool:
        return bool(self.value)

    def __repr__(self) -> str:  # never print the value itself
        return f"Secret(origin={self.origin!r}, set={bool(self.value)})"


def read_secret(env_name: str = "", file_path: str = "") -> Secret:
    """The secret from `file_path` if given, else from `$env_name`; surrounding whitespace stripped."""
    if file_path:
        try:
            value = Path(file_path).read_text().strip()
        except OSError as exc:
            raise SecretError(f"cannot read {file_path}: {exc.strerror or exc}") from exc
        return Secret(value, f"file {file_path}")
    if env_name:
        value = os.environ.get(env_name, "").strip()
        if value:
            return Secret(value, f"environment variable {env_name}")
    return Secret()
