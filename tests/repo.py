"""The repository's root folder, for tests that read its files or run commands in it."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
