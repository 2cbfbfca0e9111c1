"""Rewrite the README's benchmark block (between ``<!-- bench:start -->`` and
``<!-- bench:end -->``) from a run's results, so its figures are the docs' figures."""

from __future__ import annotations

from typing import Any

from .pages import readme as words
from .pages.shared import generated_note

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"
NOTE = generated_note(words.__name__)


def replace_block(text: str, block: str, markers: tuple[str, str, str] = (START, END, NOTE)) -> str:
    """``text`` with everything between the markers replaced by ``block``.

    ``markers`` is (start, end, note): the lab's README block uses its own.
    """
    first, last, note = markers
    start, end = text.find(first), text.find(last)
    if start < 0 or end < start:
        raise ValueError(f"no {first} ... {last} block")
    return f"{text[: start + len(first)]}\n{note}\n\n{block.strip()}\n\n{text[end:]}"


def rewrite(path: str, doc: dict[str, Any]) -> bool:
    """Rewrite ``path``'s block from ``doc``; True if the file changed."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    new = replace_block(text, words.readme_block(doc))
    if new == text:
        return False
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(new)
    return True
