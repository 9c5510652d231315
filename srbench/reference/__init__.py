"""The papers' published tables as data, and ``srbench compare`` (runs beside the papers' numbers)."""

from srbench.reference.compare import RefRow, compare_cli, compare_summary, load_reference

__all__ = ["RefRow", "compare_cli", "compare_summary", "load_reference"]
