"""The jobs view: tabs by state, a sortable page of jobs, the farm summary above it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from board.dashboard.render import macro
from board.dashboard.snapshot import Snapshot
from board.dashboard.summary import FarmSummary, farm_summary
from board.domain.jobs import SORTS, list_jobs
from board.domain.tokens import Principal
from board.state import BoardState
from wire import ACTIVE_STATES, JobPage

PAGE_SIZE = 50
TABS: dict[str, tuple[str, ...] | None] = {
    "all": None,
    "queued": ("queued",),
    "active": ACTIVE_STATES,
    "succeeded": ("succeeded",),
    "failed": ("failed",),
    "cancelled": ("cancelled",),
}
DEFAULT_SORT = "-created"
# column header → the sort key it toggles (board.jobs.SORTS)
SORTABLE = {"title", "priority", "state", "progress", "created"}


@dataclass(frozen=True)
class JobListQuery:
    """Which page of which tab, in which order; anything unknown falls back to the default."""

    tab: str = "all"
    sort: str = DEFAULT_SORT
    page: int = 1

    @classmethod
    def parse(cls, tab: str | None, sort: str | None, page: str | int | None) -> JobListQuery:
        tab = tab if tab in TABS else "all"
        sort = sort if sort and sort.lstrip("-") in SORTS else DEFAULT_SORT
        try:
            number = max(1, min(int(page or 1), 100_000))
        except ValueError:
            number = 1
        return cls(tab=tab, sort=sort, page=number)

    def url(self, **changes) -> str:
        """The jobs page with some of these parameters changed (page resets unless given)."""
        values = {"state": self.tab, "sort": self.sort, "page": 1, **changes}
        params = {k: v for k, v in values.items() if v not in ("all", DEFAULT_SORT, 1)}
        return "/" + (f"?{urlencode(params)}" if params else "")

    def sort_url(self, key: str) -> str:
        """Clicking a header sorts by it, descending first; clicking again flips the order."""
        return self.url(sort=key if self.sort == f"-{key}" else f"-{key}")

    def sort_mark(self, key: str) -> str:
        if self.sort.lstrip("-") != key:
            return ""
        return "descending" if self.sort.startswith("-") else "ascending"

    def stream_params(self) -> str:
        return urlencode({"view": "jobs", "state": self.tab, "sort": self.sort, "page": self.page})


@dataclass(frozen=True)
class JobList:
    query: JobListQuery
    page: JobPage
    summary: FarmSummary
    tabs: dict[str, tuple[str, ...] | None]

    def tab_count(self, tab: str) -> int:
        states = TABS[tab]
        if states is None:
            return self.summary.total
        return sum(self.summary.counts[s] for s in states)

    @property
    def first(self) -> int:
        return min(self.page.offset + 1, self.page.total)

    @property
    def last(self) -> int:
        return self.page.offset + len(self.page.items)

    @property
    def has_next(self) -> bool:
        return self.last < self.page.total


async def load_job_list(board: BoardState, who: Principal, query: JobListQuery) -> JobList:
    page = await list_jobs(
        board,
        who,
        state=list(TABS[query.tab] or ()) or None,
        limit=PAGE_SIZE,
        offset=(query.page - 1) * PAGE_SIZE,
        sort=query.sort,
    )
    summary = await farm_summary(board, who)
    return JobList(query=query, page=page, summary=summary, tabs=TABS)


def job_list_snapshot(view: JobList) -> Snapshot:
    row = macro("_jobs.html", "job_row")
    rows = [(job.id, str(row(job))) for job in view.page.items]
    if not rows:
        rows = [("empty", str(macro("_jobs.html", "empty_row")(view)))]
    return Snapshot(
        regions={
            "summary": str(macro("_summary.html", "summary")(view.summary)),
            "tabs": str(macro("_jobs.html", "tabs")(view)),
            "pager": str(macro("_jobs.html", "pager")(view)),
        },
        lists={"job-rows": rows},
    )
