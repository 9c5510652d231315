"""A stand-in stderr for progress-bar tests."""

from __future__ import annotations


class FakeTerminal:
    """Says it is a terminal (so srbench shows its bars) and keeps what is written."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass
