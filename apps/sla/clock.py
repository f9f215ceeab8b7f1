"""Business-time arithmetic: pure functions, no database.

A `Calendar` says when a firm (or one legal entity of it) works: an IANA timezone, the working hours of a day in
that timezone, the working weekdays and the holidays. Working time is measured in real elapsed time inside
those hours, so a day on which the clocks change still has its full working hours (09:00–17:00 is 8 hours in
Berlin on the Monday after the switch to summer time) while an all-day calendar (00:00–00:00) has 23 or 25 hours
on the day of the change itself.

    add_business_time(start, minutes, calendar)   → the instant `minutes` of working time after `start`
    business_minutes_between(a, b, calendar)      → working minutes between two instants (negative if b < a)

Both take and return timezone-aware datetimes; results are in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

ONE_DAY = timedelta(days=1)
# how many days in a row without working time we accept before calling the calendar broken
MAX_IDLE_DAYS = 3660
MIDNIGHT = time(0, 0)


@dataclass(frozen=True)
class Calendar:
    """When work happens. `work_end` of 00:00 means midnight at the end of the day (an all-day calendar)."""

    timezone: str = "UTC"
    work_start: time = time(9, 0)
    work_end: time = time(17, 0)
    weekdays: frozenset[int] = frozenset({0, 1, 2, 3, 4})  # Monday = 0 … Sunday = 6
    holidays: frozenset[date] = frozenset()
    name: str = "default"
    # working window (UTC start, UTC end) per local date, filled lazily; not part of equality/hash
    _windows: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "weekdays", frozenset(int(d) for d in self.weekdays))
        object.__setattr__(self, "holidays", frozenset(self.holidays))
        if not self.weekdays:
            raise ValueError("a calendar needs at least one working weekday")
        if not self.weekdays <= set(range(7)):
            raise ValueError("weekdays are 0 (Monday) … 6 (Sunday)")
        if self.work_end != MIDNIGHT and self.work_end <= self.work_start:
            raise ValueError("the working day must end after it starts (00:00 = end of day)")
        object.__setattr__(self, "_tz", ZoneInfo(self.timezone))  # raises for an unknown zone

    @property
    def tzinfo(self) -> ZoneInfo:
        return self._tz

    def window(self, day: date) -> tuple[datetime, datetime] | None:
        """The working hours of one local date as UTC instants, or None if it is not a working day."""
        try:
            return self._windows[day]
        except KeyError:
            pass
        win = None
        if day.weekday() in self.weekdays and day not in self.holidays:
            start = datetime.combine(day, self.work_start, tzinfo=self._tz).astimezone(UTC)
            end_day = day + ONE_DAY if self.work_end == MIDNIGHT else day
            end = datetime.combine(end_day, self.work_end, tzinfo=self._tz).astimezone(UTC)
            if end > start:
                win = (start, end)
        self._windows[day] = win
        return win

    def local_date(self, instant: datetime) -> date:
        return instant.astimezone(self._tz).date()


DEFAULT_CALENDAR = Calendar(name="default")


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def _as_timedelta(minutes) -> timedelta:
    return minutes if isinstance(minutes, timedelta) else timedelta(minutes=float(minutes))


def add_business_time(start: datetime, minutes, calendar: Calendar = DEFAULT_CALENDAR) -> datetime:
    """The instant at which `minutes` (a number or a timedelta) of working time have passed since `start`.

    Time outside working hours, on non-working weekdays and on holidays does not count. A deadline that falls
    exactly at the end of a working day is that end (Friday 16:00 + 1 h = Friday 17:00), not the next morning.
    Adding zero returns `start` unchanged.
    """
    remaining = _as_timedelta(minutes)
    if remaining < timedelta(0):
        raise ValueError("minutes must not be negative")
    cur = _aware(start, "start")
    if not remaining:
        return cur
    day = calendar.local_date(cur)
    idle = 0
    while True:
        win = calendar.window(day)
        if win is None:
            idle += 1
            if idle > MAX_IDLE_DAYS:
                raise ValueError(f"calendar {calendar.name!r} has no working time for {MAX_IDLE_DAYS} days")
        else:
            idle = 0
            win_start, win_end = win
            if cur < win_start:
                cur = win_start
            if cur < win_end:
                available = win_end - cur
                if remaining <= available:
                    return cur + remaining
                remaining -= available
                cur = win_end
        day += ONE_DAY


def business_minutes_between(a: datetime, b: datetime, calendar: Calendar = DEFAULT_CALENDAR) -> float:
    """Working minutes from `a` to `b` (fractions included); negative when `b` is before `a`."""
    a, b = _aware(a, "a"), _aware(b, "b")
    if b < a:
        return -business_minutes_between(b, a, calendar)
    total = timedelta(0)
    day, last = calendar.local_date(a), calendar.local_date(b)
    while day <= last:
        win = calendar.window(day)
        if win is not None:
            lo, hi = max(win[0], a), min(win[1], b)
            if hi > lo:
                total += hi - lo
        day += ONE_DAY
    return total / timedelta(minutes=1)
