"""The story text of a page, with the child's name and pronouns in it (issue 13).

``book_pages.text`` (and ``pages.json`` of ``import-book``) may be a ``string.Template``:
``${name}`` is the child's validated name, and the pronouns follow ``child_gender``, neutral
("they") unless the parent said girl or boy:

    ${they} ${them} ${their} ${theirs} ${themself}, and capitalized ${They} ${Them} ${Their}
    ${Theirs} ${Themself}

``$$`` is a literal ``$``. A name is substituted as text and never expanded again, so a name
with ``$`` in it is printed as typed. Unknown placeholders are refused at import, never at order
time (``template_problems``).
"""

from __future__ import annotations

from collections.abc import Callable
from string import Template

from processors.child import ChildProfile, Gender
from processors.text_layer import Box, PlacedText

_PRONOUNS: dict[Gender, dict[str, str]] = {
    "girl": {"they": "she", "them": "her", "their": "her", "theirs": "hers", "themself": "herself"},
    "boy": {"they": "he", "them": "him", "their": "his", "theirs": "his", "themself": "himself"},
    "child": {
        "they": "they",
        "them": "them",
        "their": "their",
        "theirs": "theirs",
        "themself": "themself",
    },
}
PLACEHOLDERS = frozenset(
    {"name", *_PRONOUNS["child"], *(p.capitalize() for p in _PRONOUNS["child"])}
)


def _values(profile: ChildProfile) -> dict[str, str]:
    pronouns = _PRONOUNS[profile.gender]
    return {
        "name": profile.name,
        **pronouns,
        **{key.capitalize(): value.capitalize() for key, value in pronouns.items()},
    }


def template_problems(text: str) -> list[str]:
    """Why ``text`` cannot be rendered for every child; empty when it can."""
    template = Template(text)
    if not template.is_valid():
        return ["has a malformed '$' (write $$ for a dollar sign)"]
    unknown = sorted(set(template.get_identifiers()) - PLACEHOLDERS)
    return [f"uses unknown placeholder ${{{name}}}" for name in unknown]


def has_placeholders(text: str | None) -> bool:
    return bool(text) and bool(Template(text or "").get_identifiers())


def render_story(text: str, profile: ChildProfile) -> str:
    """The page's text for this child (the template checked at import)."""
    return Template(text).substitute(_values(profile))


def longest_profile(gender: Gender, name: str) -> ChildProfile:
    """A profile for fit checks at import: the widest name the app can send."""
    return ChildProfile(name=name, age=None, gender=gender)


def page_texts(
    pages: list[dict], profile: ChildProfile, box_of: Callable[[object], Box | None]
) -> list[PlacedText | None]:
    """Each page's rendered text in its ``text_box``; None for a page whose text, if any, is
    baked into its picture (no ``text_box``)."""
    placed: list[PlacedText | None] = []
    for page in pages:
        box = box_of(page.get("text_box"))
        text = page.get("text")
        placed.append(PlacedText(render_story(text, profile), box) if box and text else None)
    return placed
