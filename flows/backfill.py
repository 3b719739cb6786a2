"""Backfill: the nightly flow once per date of a range (each a nightly subflow: the same code path)."""

from __future__ import annotations

from datetime import date, timedelta

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field, model_validator

from flows.nightly import nightly
from flows.params import NightlyParams


class BackfillParams(BaseModel):
    """A date range and the nightly parameters every date runs with."""

    start: date = Field(description="First run date.")
    end: date = Field(description="Last run date (inclusive).")
    step_days: int = Field(1, ge=1, le=366, description="Days between run dates.")
    nightly: NightlyParams = Field(default_factory=NightlyParams, description="Parameters of each run.")

    @model_validator(mode="after")
    def _ordered(self) -> BackfillParams:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self

    def dates(self) -> list[date]:
        """The run dates of the range."""
        days = (self.end - self.start).days
        return [self.start + timedelta(days=d) for d in range(0, days + 1, self.step_days)]


@flow(name="vigia-backfill", log_prints=True)
def backfill(params: BackfillParams) -> list[str]:
    """Run the nightly flow for every date of the range, oldest first; returns the run folders.
    A failed date does not stop the others; the backfill fails at the end if any date failed."""
    logger = get_run_logger()
    published, failed = [], []
    for day in params.dates():
        state = nightly(params.nightly.model_copy(update={"run_date": day.isoformat()}), return_state=True)
        if state.is_completed():
            published.append(state.result())
        else:
            failed.append(day.isoformat())
            logger.error("backfill %s: %s", day, state.message)
    if failed:
        raise RuntimeError(
            f"backfill: {len(failed)} of {len(params.dates())} dates failed: {', '.join(failed)}"
        )
    return published
