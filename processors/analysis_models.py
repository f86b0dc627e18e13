"""The structured answers the analysis model must give, validated with pydantic.

Field descriptions travel to the model as part of the JSON schema, so they are written for it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class CoverAnalysis(BaseModel):
    """How the book is drawn and who its hero is, so every page can be redrawn in the same style."""

    art_style: str = Field(description="Overall illustration style, e.g. 'soft watercolor picture book'.")
    medium: str = Field(description="Apparent medium: watercolor, gouache, digital vector, pencil...")
    palette: list[str] = Field(description="Dominant colors as #rrggbb hex codes, most used first.")
    line_work: str = Field(description="Outlines and line quality: none, thin ink, bold black...")
    lighting: str = Field(description="Light direction, softness and time of day.")
    composition: str = Field(description="Framing and layout of the cover.")
    main_character: str = Field(description="The child hero to be replaced: look, clothes, pose.")
    character_position: str = Field(description="Where the hero stands in the picture.")
    mood: str = Field(description="The emotional tone of the illustration.")


class ChildAnalysis(BaseModel):
    """What the photo shows of the child, and whether it is usable at all."""

    face_count: int = Field(ge=0, description="Number of human faces clearly visible in the photo.")
    apparent_age: int | None = Field(default=None, ge=0, le=18, description="Apparent age in years.")
    hair: str = Field(description="Hair color, length and style.")
    eyes: str = Field(description="Eye color and shape.")
    skin_tone: str = Field(description="Skin tone in neutral, respectful words.")
    glasses: bool = Field(description="Whether the child wears glasses.")
    distinctive_features: list[str] = Field(
        default_factory=list, description="Freckles, dimples, hair clips... that make the child recognizable."
    )
    photo_issues: list[str] = Field(
        default_factory=list, description="Problems such as blur, darkness, face covered, not a child."
    )
