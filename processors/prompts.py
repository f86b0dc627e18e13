"""Prompt templates: loading, versioning, and rendering them with validated data.

The child's details are validated before they get here (``processors/child.py``).

Every prompt lives in ``prompts/*.txt`` as a ``string.Template`` (``$name``), never in Python:
``string.Template`` only substitutes names, so a value can neither reach attributes nor inject
format specs the way ``str.format`` allows, and a ``$`` inside a value is never re-expanded.

Values come from three sources of differing trust, and each is made safe for its slot:

* the child's name, age and gender are typed by a parent: ``validate_child`` normalizes them
  or fails the item with ``invalid_child_data``; the prompt then carries them only as one JSON
  object inside a ``<child_data>`` block that the templates declare to be data, never
  instructions (see prompts/README.md for the outcome of each hostile-name case);
* the cover and child analyses are model output (a photo can contain text the model echoes):
  they are reduced to one short line each, without control characters or angle brackets, so
  they can neither break the layout nor close the ``<child_data>`` block;
* the book and page rows come from the catalog and get the same cleaning.

:attr:`PromptBook.version` hashes all templates, so analyses and pages record which prompts
made them and cached cover analyses are not reused across prompt edits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from string import Template
from typing import Any

from processors.analysis_models import ChildAnalysis, CoverAnalysis
from processors.child import ChildProfile, clean_line
from processors.resources import data_dir

PROMPTS_DIR = data_dir(__file__, "prompts")
REQUIRED_TEMPLATES = frozenset(
    {
        "cover_analysis",
        "child_analysis",
        "cover",
        "page",
        "softened_suffix",
        "qa_judge",
        "qa_redraw",
        "qa_problems",
    }
)

# Caps for values the models and the catalog provide; a runaway answer cannot swamp a prompt.
_FIELD_LIMIT = 300
_TITLE_LIMIT = 150
_PAGE_TEXT_LIMIT = 800
_ITEM_LIMIT = 80
_MAX_ITEMS = 8
_UNKNOWN = "unknown"
_NONE = "none"


def _json_data(value: object) -> str:
    """JSON for a delimited data block; ``<`` and ``>`` escaped so no value can forge a tag."""
    encoded = json.dumps(value, ensure_ascii=False)
    return encoded.replace("<", "\\u003c").replace(">", "\\u003e")


def _line(value: object, limit: int, default: str = _UNKNOWN) -> str:
    """A model or catalog value as one bounded line, without angle brackets."""
    if value is None:
        return default
    text = clean_line(str(value).replace("<", " ").replace(">", " "))
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text or default


def _items(values: Iterable[object]) -> str:
    kept = [item for item in (_line(value, _ITEM_LIMIT, "") for value in values) if item]
    return "; ".join(kept[:_MAX_ITEMS]) or _NONE


def _age_range(book: Mapping[str, Any]) -> str:
    """The catalog's ``age_min``/``age_max`` as "3-6", "3+" or "0-6"."""
    low, high = book.get("age_min"), book.get("age_max")
    if high is None:
        return _UNKNOWN if low is None else f"{_line(low, 3)}+"
    return f"{_line(0 if low is None else low, 3)}-{_line(high, 3)}"


def _book_values(book: Mapping[str, Any]) -> dict[str, str]:
    return {
        "book_title": _json_data(_line(book.get("title"), _TITLE_LIMIT)),
        "book_genre": _line(book.get("genre"), _ITEM_LIMIT),
        "book_age_range": _age_range(book),
    }


def _cover_values(cover: CoverAnalysis) -> dict[str, str]:
    return {
        "art_style": _line(cover.art_style, _FIELD_LIMIT),
        "medium": _line(cover.medium, _FIELD_LIMIT),
        "palette": _items(cover.palette),
        "line_work": _line(cover.line_work, _FIELD_LIMIT),
        "lighting": _line(cover.lighting, _FIELD_LIMIT),
        "composition": _line(cover.composition, _FIELD_LIMIT),
        "main_character": _line(cover.main_character, _FIELD_LIMIT),
        "character_position": _line(cover.character_position, _FIELD_LIMIT),
        "mood": _line(cover.mood, _FIELD_LIMIT),
    }


def _profile_values(profile: ChildProfile) -> dict[str, str]:
    return {
        "child_age": _UNKNOWN if profile.age is None else str(profile.age),
        "child_gender": profile.gender,
        "child_data": _json_data(
            {"name": profile.name, "age": profile.age, "gender": profile.gender}
        ),
    }


def _child_values(child: ChildAnalysis) -> dict[str, str]:
    return {
        "child_apparent_age": _line(child.apparent_age, 3),
        "child_hair": _line(child.hair, _FIELD_LIMIT),
        "child_eyes": _line(child.eyes, _FIELD_LIMIT),
        "child_skin_tone": _line(child.skin_tone, _FIELD_LIMIT),
        "child_glasses": "not known"
        if child.glasses is None
        else ("yes" if child.glasses else "no"),
        "child_features": _items(child.distinctive_features),
    }


def _version(texts: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(texts):
        digest.update(f"{name}.txt\0{texts[name]}\0".encode())
    return digest.hexdigest()[:12]


class PromptBook:
    """All templates of one directory, loaded and checked once at start.

    A malformed or missing template fails here, when the daemon starts, rather than in the
    middle of a paid order.
    """

    def __init__(self, directory: Path | str = PROMPTS_DIR) -> None:
        directory = Path(directory)
        # CRLF is normalized so a Windows checkout renders, and versions, identically.
        texts = {
            path.stem: path.read_text(encoding="utf-8").replace("\r\n", "\n")
            for path in directory.glob("*.txt")
        }
        missing = REQUIRED_TEMPLATES - texts.keys()
        if missing:
            raise FileNotFoundError(f"missing prompt templates in {directory}: {sorted(missing)}")
        self._templates = {name: Template(text) for name, text in texts.items()}
        for name, template in self._templates.items():
            if not template.is_valid():
                raise ValueError(f"prompt template {name}.txt has a malformed '$' (use $$ for '$')")
        self.version = _version(texts)
        """Short sha256 of every template's file name and text: any edit changes it."""

    def render(self, name: str, /, **values: object) -> str:
        """Fill template ``name``; a missing value is a bug, raised as a KeyError naming it."""
        template = self._templates[name]
        try:
            return template.substitute({key: str(value) for key, value in values.items()})
        except KeyError as err:
            raise KeyError(f"prompt template {name}.txt needs a value for ${err.args[0]}") from err

    def cover_analysis_prompt(self, book: Mapping[str, Any]) -> str:
        """Instructions for describing the book's cover; sent with the cover image."""
        return self.render("cover_analysis", **_book_values(book))

    def child_analysis_prompt(self, profile: ChildProfile) -> str:
        """Instructions for describing the child's photo; sent with the photo.

        The name is left out: the photo analysis does not need it, so it gets no chance there.
        """
        values = _profile_values(profile)
        return self.render(
            "child_analysis", child_age=values["child_age"], child_gender=values["child_gender"]
        )

    def cover_prompt(
        self,
        cover: CoverAnalysis,
        child: ChildAnalysis,
        book: Mapping[str, Any],
        profile: ChildProfile,
        *,
        softened: bool = False,
    ) -> str:
        """The personalized cover; images follow as [original cover, child photo]."""
        values = {
            **_book_values(book),
            **_cover_values(cover),
            **_child_values(child),
            **_profile_values(profile),
        }
        return self._edit_prompt("cover", values, softened)

    def page_prompt(
        self,
        cover: CoverAnalysis,
        child: ChildAnalysis,
        book: Mapping[str, Any],
        page: Mapping[str, Any],
        profile: ChildProfile,
        *,
        softened: bool = False,
    ) -> str:
        """One personalized page (``has_character`` true).

        Images follow as [original page, child photo, generated cover as identity reference].
        """
        values = {
            **_book_values(book),
            **_cover_values(cover),
            **_child_values(child),
            **_profile_values(profile),
            "page_number": str(int(page["page_number"])),
            "page_text": _line(page.get("text"), _PAGE_TEXT_LIMIT, _NONE),
        }
        return self._edit_prompt("page", values, softened)

    def _edit_prompt(self, name: str, values: Mapping[str, str], softened: bool) -> str:
        """The softened variant is the normal prompt plus one suffix, so the two cannot drift."""
        prompt = self.render(name, **values)
        if not softened:
            return prompt
        return f"{prompt.rstrip()}\n\n{self.render('softened_suffix', **values)}"
