"""A bench-only judge that scores likeness by what the judged drawing was made with (the
``ordering`` scenario).

What the fake cannot know: it draws every illustration as a tinted copy of its base whatever the
request carried, and its judge answers 8.5 always, so nothing in the fake looks more or less like
the child. What this behaviour does know: the QA judge (processors/qa.py) is sent the cover as
identity reference exactly when the page was drawn with it (a fourth image). It scores
``with_reference`` for those pages and for the cover, ``without_reference`` for pages drawn
before the cover existed. Both numbers are the bench's assumptions, stated in the report, not
measurements; what it measures is how many pages went without the reference and what that
ordering costs in wall time. Everything else is the fake's healthy answer
(testkit/fakes/gemini_server.py ``succeed``), in its reply format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from aiohttp import web

from bench.faults import child_and_page
from bench.latency import is_analysis
from testkit.fakes.gemini_server import FakeGemini, RecordedRequest, candidate_response, succeed


@dataclass(frozen=True)
class Score:
    page: int
    with_reference: bool
    likeness: float


@dataclass
class ReferenceLikeness:
    with_reference: float = 8.5
    without_reference: float = 7.5
    #: every judge answer, in the order they were given
    scores: list[Score] = field(default_factory=list)
    _pages: dict[bytes, int] = field(default_factory=dict)

    async def __call__(self, fake: FakeGemini, request: RecordedRequest) -> web.Response:
        if request.schema_kind == "judge":
            # The judge is sent [original, drawing, photo, cover?] (processors/qa.py).
            page = self._pages.get(request.images[0], -1)
            referenced = len(request.images) >= 4
            likeness = self.with_reference if referenced or page == 0 else self.without_reference
            self.scores.append(Score(page, referenced, likeness))
            verdict = {**fake.analysis_json["judge"], "likeness_score": likeness}  # type: ignore[dict-item]
            return candidate_response([{"text": json.dumps(verdict)}])
        if not is_analysis(request):
            self._pages[request.images[0]] = child_and_page(request)[1]
        return await succeed()(fake, request)
