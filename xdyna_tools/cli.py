"""What the command-line tools write for the user themselves (summaries, fatal errors); the rest is logging."""

from __future__ import annotations

import sys


def say(text: str, error: bool = False) -> None:
    stream = sys.stderr if error else sys.stdout
    stream.write(text + "\n")
    stream.flush()
