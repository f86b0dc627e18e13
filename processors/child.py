"""The child's details as a parent typed them: checked, normalized, or refused.

A name, an age and a gender come from the app's form. :func:`validate_child` keeps every real
name (any script, right-to-left, emoji) and refuses only what cannot be a name or would bloat a
prompt, with ``invalid_child_data`` and a message the parent can act on. Injection text is not
filtered here: the prompts (``processors/prompts.py``) carry the name as delimited JSON data.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from processors.errors import TerminalError

NAME_MAX_CHARS = 40
"""Visible characters (combining marks, ZWJ and skin-tone modifiers not counted)."""
NAME_MAX_CODEPOINTS = 120
"""Hard cap on code points, so stacked combining marks cannot hide a long payload."""
AGE_MIN, AGE_MAX = 0, 14
"""Ages the catalog's picture books are made for, from baby books to early readers."""

Gender = Literal["girl", "boy", "child"]
_GENDERS: dict[str, Gender] = {
    "girl": "girl",
    "female": "girl",
    "f": "girl",
    "boy": "boy",
    "male": "boy",
    "m": "boy",
}

# Invisible characters that real spelling needs: ZWNJ (Persian, Indic scripts) and ZWJ (emoji
# sequences such as family or profession emoji). All other format characters (bidi overrides
# and isolates, LRM/RLM, zero-width spaces, BOM, tags) only change how text *looks*.
_JOINERS = frozenset({"\u200c", "\u200d"})
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_UNCOUNTED_CATEGORIES = frozenset({"Mn", "Mc", "Me"})
_SKIN_TONES = range(0x1F3FB, 0x1F400)
_AGE_TEXT = re.compile(r"\d{1,2}")


class InvalidChildData(TerminalError):
    """The child's details cannot be used; the parent has to correct them in the app."""

    code = "invalid_child_data"
    parent_message = "We could not use the child's details you entered. Please check them."


@dataclass(frozen=True)
class ChildProfile:
    """The child's details as the prompts may use them; build it with :func:`validate_child`."""

    name: str
    age: int | None
    gender: Gender


def validate_child(name: str | None, age: int | str | None, gender: str | None) -> ChildProfile:
    """Normalize what the app stored for the child, or raise :class:`InvalidChildData`.

    The checks keep every real name (any script, including right-to-left, with emoji) and
    reject only what cannot be a name or would bloat the prompt. Injection text is *not*
    filtered: it is harmless because the prompts carry the name as delimited JSON data.
    """
    return ChildProfile(name=_validate_name(name), age=_validate_age(age), gender=_gender(gender))


def _validate_name(name: str | None) -> str:
    cleaned = clean_line(name) if isinstance(name, str) else ""
    if not cleaned:
        raise InvalidChildData(
            "child name is missing or blank",
            parent_message="Your child's name is missing. Please add it and try again.",
        )
    if _visible_length(cleaned) > NAME_MAX_CHARS or len(cleaned) > NAME_MAX_CODEPOINTS:
        raise InvalidChildData(
            f"child name is {len(cleaned)} code points long",
            parent_message=(
                f"Your child's name is too long (at most {NAME_MAX_CHARS} characters). "
                "Please shorten it and try again."
            ),
        )
    if not any(unicodedata.category(ch).startswith("L") for ch in cleaned):
        raise InvalidChildData(
            "child name has no letter",
            parent_message="Your child's name needs at least one letter. Please check it.",
        )
    return cleaned


def _validate_age(age: int | str | None) -> int | None:
    """An int in the catalog's range; None or a blank string mean "not given"."""
    if isinstance(age, str):
        text = age.strip()
        if not text:
            return None
        # \d accepts every script's digits (e.g. Arabic-Indic) and int() reads them; the full
        # match excludes signs, decimals and the underscores int() would otherwise allow.
        if not _AGE_TEXT.fullmatch(text):
            raise _invalid_age()
        age = int(text)
    if age is None:
        return None
    if isinstance(age, bool) or not isinstance(age, int) or not AGE_MIN <= age <= AGE_MAX:
        raise _invalid_age()
    return age


def _invalid_age() -> InvalidChildData:
    return InvalidChildData(
        "child age is not a whole number in range",
        parent_message=(
            f"Your child's age must be a whole number from {AGE_MIN} to {AGE_MAX}. "
            "Please check it and try again."
        ),
    )


def _gender(gender: str | None) -> Gender:
    """'girl', 'boy', or the neutral 'child' for anything else: gender is optional, never fatal."""
    if not isinstance(gender, str):
        return "child"
    return _GENDERS.get(clean_line(gender).casefold(), "child")


def clean_line(text: str) -> str:
    """One NFC line: invisible controls removed, every whitespace run (newlines too) one space."""
    kept = "".join(
        ch
        for ch in text
        if ch.isspace() or ch in _JOINERS or unicodedata.category(ch) not in _DROPPED_CATEGORIES
    )
    return " ".join(unicodedata.normalize("NFC", kept).split())


def _visible_length(text: str) -> int:
    """Roughly the number of user-perceived characters, without a grapheme library."""
    return sum(
        1
        for ch in text
        if ch not in _JOINERS
        and ord(ch) not in _SKIN_TONES
        and unicodedata.category(ch) not in _UNCOUNTED_CATEGORIES
    )
