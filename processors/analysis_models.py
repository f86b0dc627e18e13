"""The structured answers the analysis model must give, validated with pydantic.

Field descriptions travel to the model as part of the JSON schema, so they are written for it.

Strict only where a decision depends on the value: ``face_count`` decides whether the photo is
usable, so it must be a non-negative whole number. Every other field only colours the prompts,
and models drift in its shape (a string where a list was asked, a nested object, a missing
field), so those fields are optional with neutral defaults and coerced:

- text field given a list: its items joined with ", "; given an object: its values, joined;
- list field given a string: split on commas (a lone phrase becomes a one-item list);
- numbers and booleans in text fields become their text; ``null`` becomes the default.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _as_text(value: Any) -> str:
    """Any JSON value as one line of description."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        return ", ".join(t for t in (_as_text(v) for v in value.values()) if t)
    if isinstance(value, (list, tuple)):
        return ", ".join(t for t in (_as_text(v) for v in value) if t)
    return str(value)


def _as_list(value: Any) -> list[str]:
    """Any JSON value as a list of short descriptions."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return [t for t in (_as_text(v) for v in value) if t]
    text = _as_text(value)
    return [text] if text else []


def _as_flag(value: Any) -> bool | None:
    if isinstance(value, bool) or value is None:
        return value
    text = _as_text(value).lower()
    if text in {"true", "yes", "1"}:
        return True
    if text in {"false", "no", "0", "none"}:
        return False
    return None


def _as_age(value: Any) -> int | None:
    """An apparent age, or None when the model gave something that is not one."""
    try:
        age = round(float(value))
    except (TypeError, ValueError):
        return None
    return age if 0 <= age <= 18 else None


Text = Annotated[str, BeforeValidator(_as_text)]
TextList = Annotated[list[str], BeforeValidator(_as_list)]
Flag = Annotated[bool | None, BeforeValidator(_as_flag)]
Age = Annotated[int | None, BeforeValidator(_as_age)]


class _Descriptive(BaseModel):
    # Extra keys a model adds are dropped, not an error.
    model_config = ConfigDict(extra="ignore")


class CoverAnalysis(_Descriptive):
    """How the book is drawn and who its hero is, so every page can be redrawn in the same style."""

    art_style: Text = Field(
        "", description="Overall illustration style, e.g. 'soft watercolor picture book'."
    )
    medium: Text = Field(
        "", description="Apparent medium: watercolor, gouache, digital vector, pencil..."
    )
    palette: TextList = Field(
        default_factory=list, description="Dominant colors as #rrggbb hex codes, most used first."
    )
    line_work: Text = Field(
        "", description="Outlines and line quality: none, thin ink, bold black..."
    )
    lighting: Text = Field("", description="Light direction, softness and time of day.")
    composition: Text = Field("", description="Framing and layout of the cover.")
    main_character: Text = Field(
        "", description="The child hero to be replaced: look, clothes, pose."
    )
    character_position: Text = Field("", description="Where the hero stands in the picture.")
    mood: Text = Field("", description="The emotional tone of the illustration.")


class ChildAnalysis(_Descriptive):
    """What the photo shows of the child, and whether it is usable at all."""

    # Strict: whether the photo is usable depends on it (processors.analysis.PhotoRejected).
    face_count: int = Field(ge=0, description="Number of human faces clearly visible in the photo.")
    apparent_age: Age = Field(default=None, description="Apparent age in years.")
    hair: Text = Field("", description="Hair color, length and style.")
    eyes: Text = Field("", description="Eye color and shape.")
    skin_tone: Text = Field("", description="Skin tone in neutral, respectful words.")
    glasses: Flag = Field(default=None, description="Whether the child wears glasses.")
    distinctive_features: TextList = Field(
        default_factory=list,
        description="Freckles, dimples, hair clips... that make the child recognizable.",
    )
    photo_issues: TextList = Field(
        default_factory=list,
        description="Problems such as blur, darkness, face covered, not a child.",
    )
