"""A bench-only judge for the ``ordering`` scenario: it knows what each drawing was drawn with.

What the fake cannot know: it draws every illustration as a tinted copy of its base whatever the
request carried, and its judge answers 8.5 always, so nothing in the fake looks more or less like
the child. What this behaviour does know is whether the page's latest image call carried the
cover as identity reference (a third image after the base and the photo, processors/ai/gemini.py
``generate_image``). With ``without_reference`` set, a page drawn without it gets that likeness from its
judge: the ordering scenario sets it below QA_MIN_LIKENESS for its worst case (every page drawn
before the cover existed fails its judge against the cover and is drawn again); None keeps the
fake's healthy answer, the best case. Neither is a measurement of likeness; what is measured is
how many pages went without the reference, the wall time and the image calls each case costs.
Everything else is the fake's healthy answer (testkit/fakes/gemini_server.py ``succeed``), in
its reply format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from aiohttp import web

from bench.faults import child_and_page
from bench.latency import is_analysis
from testkit.fakes.gemini_server import FakeGemini, RecordedRequest, candidate_response, succeed


@dataclass(frozen=True)
class Verdict:
    page: int
    #: the judged drawing's image call carried the cover as reference
    drawn_with_reference: bool
    #: the judge was sent the cover as fourth image
    judged_against_cover: bool


@dataclass
class ReferenceLikeness:
    without_reference: float | None = None
    #: every judge answer, in the order they were given
    verdicts: list[Verdict] = field(default_factory=list)
    _pages: dict[bytes, int] = field(default_factory=dict)
    _referenced: dict[int, bool] = field(default_factory=dict)

    async def __call__(self, fake: FakeGemini, request: RecordedRequest) -> web.Response:
        if request.schema_kind == "judge":
            # The judge is sent [original, drawing, photo, cover?] (processors/qa.py ``_judge``).
            page = self._pages.get(request.images[0], -1)
            referenced = self._referenced.get(page, False)
            self.verdicts.append(Verdict(page, referenced, len(request.images) >= 4))
            if page > 0 and not referenced and self.without_reference is not None:
                verdict = {**fake.analysis_json["judge"], "likeness_score": self.without_reference}  # type: ignore[dict-item]
                return candidate_response([{"text": json.dumps(verdict)}])
        elif not is_analysis(request):
            page = child_and_page(request)[1]
            self._pages[request.images[0]] = page
            # An image call is sent [base, photo, cover?] (processors/ai/gemini.py).
            self._referenced[page] = len(request.images) >= 3
        return await succeed()(fake, request)
