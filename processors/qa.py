"""The quality judge: every generated illustration is looked at before it counts (issue 13).

After each drawn page and the cover, the analysis model gets the original, the result, the child's
photo and (for pages) the generated cover as identity reference, and answers a ``QualityVerdict``.
A verdict that fails (``problems_of``) makes the illustration be drawn again with a prompt that
names what was wrong (``prompts/qa_redraw.txt`` and ``prompts/qa_problems.txt``), up to
``max_redraws`` times. Then ``on_fail`` decides: ``fail`` raises ``QualityCheckFailed`` (the item
fails for good: the same inputs keep giving the same kind of picture, and each try is paid);
``review`` keeps the last drawing and flags it, so the book completes with ``needs_review`` on the
page's checkpoint and on the item, for an operator to look at before it is printed.

The verdict is returned for the page's checkpoint, written in the same transaction, so a resumed
item never judges or redraws a page again. Each drawing is handed to ``drafted`` (stored and
recorded as the page's draft) while it is judged, and a resumed item passes the draft back as
``resume``: a kill -9 during a judge call repeats the judge call, not the paid drawing. Judge
calls go through the same ``ImageAI`` (in production ``LimitedAI``), so pacing, retries, usage
and cost apply to them as to any call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field

from processors.ai.base import Analysis, ImageAI, ImagePart, Usage
from processors.analysis_models import Text, TextList
from processors.errors import TerminalError
from processors.prompts import PromptBook

QA_MODES = ("judge", "off")
QA_ON_FAIL = ("fail", "review")

Reference = Literal["cover_itself", "with_cover", "without_cover", "unknown"]
"""What a drawing was made with, as its verdict's ``drawn_with`` and the verdict metric's label:
the cover itself (no reference), a page with the generated cover as reference, a page without it
(drawn beside the cover, COVER_FIRST=false), or a draft from an earlier attempt."""

Draw = Callable[[str, str], Awaitable[tuple[asyncio.Future[bytes], str, Reference]]]
"""Draws one illustration from (prompt, softened prompt): (its page's JPEG, model name, the
identity reference its image call carried). The drawing has passed its output checks when this
returns, but its JPEG may still be in the making: the judge's input is made from the model's
reply itself (processors/book.py), so the judge call does not wait for the page's fit."""


def finished(jpeg: bytes) -> asyncio.Future[bytes]:
    """A drawing's JPEG that is already made (a draft read back from storage), as ``Draw`` gives
    one."""
    page: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    page.set_result(jpeg)
    return page


@dataclass(frozen=True)
class Drawing:
    """An illustration that passed the output checks, before its verdict."""

    #: Its page's JPEG, done or still in the making (``Draw``).
    page: asyncio.Future[bytes]
    model: str
    #: How many redraws of the quality gate came before it: 0 for the first drawing.
    redraws: int
    #: What identity reference it was drawn with; a draft does not record it.
    reference: Reference = "unknown"


Drafted = Callable[[Drawing], Awaitable[None]]
"""Stores a drawing before its judge answers, so a later attempt can judge it instead."""


class QualityCheckFailed(TerminalError):
    """The illustration stayed below the quality threshold after every redraw."""

    code = "quality_check_failed"
    parent_message = (
        "We could not draw your child's book to our quality standard from this photo. "
        "Please try again with a different, clear photo of your child's face."
    )


class QualityVerdict(BaseModel):
    """The judge's answer. Field descriptions go to the model in the JSON schema.

    The fields that decide are validated strictly (pydantic's standard bool and number
    parsing, a score within 0-10): a reply that is not a verdict is an ``AIBadResponse``, never
    a pass. Fields a judge cannot check (the offline one) are ``None``, which decides nothing
    and says so in the stored verdict. ``problems`` and ``notes`` are descriptive: coerced.
    """

    model_config = ConfigDict(extra="ignore")

    hero_present: bool = Field(description="Whether the book's child hero is clearly visible.")
    likeness_score: float = Field(
        ge=0, le=10, description="0-10: how recognizably the hero is the child of the photo."
    )
    hero_count: int | None = Field(
        default=None, ge=0, description="How many times the child appears in the picture."
    )
    extra_limbs_or_faces: bool | None = Field(
        default=None, description="Whether any character has extra or missing limbs or faces."
    )
    text_garbled: bool | None = Field(
        default=None, description="Whether printed text was changed, garbled or added."
    )
    scene_kept: bool | None = Field(
        default=None, description="Whether the original's scene is kept, only the hero changed."
    )
    problems: TextList = Field(default_factory=list, description="Short phrases naming problems.")
    notes: Text = Field("", description="Anything else worth telling the operator.")


def problems_of(verdict: QualityVerdict, min_likeness: float) -> list[str]:
    """The keys of ``prompts/qa_problems.txt`` this verdict fails on; empty when it passes."""
    found = []
    if not verdict.hero_present:
        found.append("hero_missing")
    if verdict.likeness_score < min_likeness:
        found.append("likeness")
    if verdict.hero_count is not None and verdict.hero_count != 1:
        found.append("hero_count")
    if verdict.extra_limbs_or_faces:
        found.append("extra_limbs_or_faces")
    if verdict.text_garbled:
        found.append("text_garbled")
    if verdict.scene_kept is False:
        found.append("scene_changed")
    return found


@dataclass(frozen=True)
class Checked:
    """An illustration that went through the gate, with what goes on its checkpoint."""

    jpeg: bytes
    model: str
    #: The last verdict with its outcome and redraw count; None when QA_MODE=off.
    verdict: dict[str, Any] | None
    needs_review: bool = False
    #: Already stored at the page's result path (as a draft): the save writes only the row.
    stored: bool = False


class QualityGate:
    """Draw, judge, redraw (module docstring)."""

    def __init__(
        self,
        ai: ImageAI,
        prompts: PromptBook,
        *,
        mode: str = "judge",
        max_redraws: int = 2,
        on_fail: str = "fail",
        min_likeness: float = 6.0,
        on_verdict: Callable[[str, str], None] | None = None,
    ) -> None:
        """``on_verdict(outcome, reference)`` sees every verdict, ``passed`` or ``failed``, with
        what the drawing was made with (``Reference``): the daemon counts them
        (``monitor.metrics.Metrics.quality_verdict``)."""
        if mode not in QA_MODES or on_fail not in QA_ON_FAIL:
            raise ValueError(f"QA mode {mode!r} / on-fail {on_fail!r} unknown")
        self.ai = ai
        self.prompts = prompts
        self.mode = mode
        self.max_redraws = max_redraws
        self.on_fail = on_fail
        self.min_likeness = min_likeness
        self.on_verdict = on_verdict

    async def draw(
        self,
        draw: Draw,
        prompt: str,
        softened: str,
        *,
        original: ImagePart,
        photo: ImagePart,
        identity: Callable[[], Awaitable[ImagePart | None]] | None,
        usage: Usage,
        as_part: Callable[[asyncio.Future[bytes]], Awaitable[ImagePart]],
        resume: Drawing | None = None,
        drafted: Drafted | None = None,
        doomed: Callable[[], None] | None = None,
    ) -> Checked:
        """One checked illustration; ``as_part`` gives a drawing's judge input, and
        ``identity`` (for pages) gives the cover each verdict compares with, looked up when the
        judge call starts: a page drawn beside the cover waits for it there.

        ``resume``: the page's draft from an earlier attempt, judged first instead of a new
        drawing (at its own redraw count). ``drafted``: called with every new drawing, beside
        its judge call (the module docstring). ``doomed``: called as soon as a verdict means
        ``QualityCheckFailed``, before the drawing's draft is finished, so siblings start no
        new paid call meanwhile."""
        if self.mode == "off":
            if resume is not None:
                return Checked(await resume.page, resume.model, None, stored=True)
            page, model, _ = await draw(prompt, softened)
            return Checked(await page, model, None)
        redraw_prompt, redraw_softened = prompt, softened
        first = min(resume.redraws, self.max_redraws) if resume else 0
        for redraw in range(first, self.max_redraws + 1):
            if resume is not None and redraw == first:
                drawing = resume
            else:
                page, model, reference = await draw(redraw_prompt, redraw_softened)
                drawing = Drawing(page, model, redraw, reference)
            saving = drafted(drawing) if drafted and drawing is not resume else None
            last_chance = redraw == self.max_redraws and self.on_fail == "fail"
            try:
                result = await _beside(
                    self._judge(drawing, original, photo, identity, usage, as_part),
                    saving,
                    doomed if last_chance else None,
                    self.min_likeness,
                )
            except BaseException:
                drawing.page.cancel()  # nobody will take this drawing now
                raise
            verdict = result.value
            problems = problems_of(verdict, self.min_likeness)
            record = {
                **verdict.model_dump(),
                "failed": problems,
                "redraws": redraw,
                "drawn_with": drawing.reference,
                "judge_model": result.model,
                "min_likeness": self.min_likeness,
            }
            if self.on_verdict:
                self.on_verdict("failed" if problems else "passed", drawing.reference)
            stored = drafted is not None or drawing is resume
            if not problems:
                logger.info("quality check passed", likeness=verdict.likeness_score, redraws=redraw)
                return Checked(await drawing.page, drawing.model, record, stored=stored)
            logger.info(
                "quality check failed: {}",
                ", ".join(problems),
                likeness=verdict.likeness_score,
                redraw=redraw,
            )
            if redraw < self.max_redraws:
                drawing.page.cancel()  # another drawing comes: this one's fit is not wanted
            suffix = self._redraw_suffix(verdict, problems)
            redraw_prompt = f"{prompt.rstrip()}\n\n{suffix}"
            redraw_softened = f"{softened.rstrip()}\n\n{suffix}"
        if self.on_fail == "review":
            logger.warning(
                "quality check still failing after {} redraws; flagged for review", self.max_redraws
            )
            return Checked(
                await drawing.page, drawing.model, record, needs_review=True, stored=stored
            )
        raise QualityCheckFailed(
            f"quality check failed after {self.max_redraws} redraws: {', '.join(problems)} "
            f"(likeness {verdict.likeness_score:g}, needs {self.min_likeness:g})"
        )

    async def _judge(
        self,
        drawing: Drawing,
        original: ImagePart,
        photo: ImagePart,
        identity: Callable[[], Awaitable[ImagePart | None]] | None,
        usage: Usage,
        as_part: Callable[[asyncio.Future[bytes]], Awaitable[ImagePart]],
    ) -> Analysis[QualityVerdict]:
        cover = await identity() if identity else None
        images = [original, await as_part(drawing.page), photo, *([cover] if cover else [])]
        return await self.ai.analyze(
            prompt=self.prompts.render("qa_judge"),
            images=images,
            schema=QualityVerdict,
            usage=usage,
        )

    def _redraw_suffix(self, verdict: QualityVerdict, problems: list[str]) -> str:
        sentences = problem_sentences(self.prompts, verdict, self.min_likeness)
        listed = "\n".join(f"- {sentences[key]}" for key in problems)
        return self.prompts.render("qa_redraw", problems=listed)


async def _beside(
    judging: Awaitable[Analysis[QualityVerdict]],
    saving: Awaitable[None] | None,
    doomed: Callable[[], None] | None,
    min_likeness: float,
) -> Analysis[QualityVerdict]:
    """The judge's answer, with ``saving`` run beside it and finished before this returns, also
    when the judge call fails: the drawing is paid for either way. A failing verdict calls
    ``doomed`` (given for a last chance) before the wait for ``saving``."""
    stored = asyncio.ensure_future(saving) if saving is not None else None
    try:
        result = await judging
        if doomed is not None and problems_of(result.value, min_likeness):
            doomed()
        return result
    finally:
        if stored is not None:
            await stored


def problem_sentences(
    prompts: PromptBook, verdict: QualityVerdict, min_likeness: float
) -> dict[str, str]:
    """``prompts/qa_problems.txt`` rendered, as {key: sentence} (one ``key: sentence`` a line)."""
    text = prompts.render(
        "qa_problems",
        likeness_score=f"{verdict.likeness_score:g}",
        min_likeness=f"{min_likeness:g}",
        hero_count="no" if verdict.hero_count is None else verdict.hero_count,
    )
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): sentence.strip() for key, sentence in pairs}
