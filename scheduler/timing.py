"""When a schedule fires: cron on wall-clock time in an IANA zone, with DESIGN §7's DST rules.

- A wall-clock time that does not exist (spring forward) fires at the first instant
  after the gap.
- A wall-clock time that exists twice (fall back) fires once, at its first occurrence.

Cron is evaluated on naive local times (croniter), each naive time is then placed on
the UTC timeline by these rules, and firings are strictly increasing in UTC.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, croniter

MAX_LOOKAHEAD_YEARS = 5
# The years a schedule's times may name: AWS cron's year range. Far from datetime's limits, so
# that no zone offset or lookahead added to them overflows.
FIRST_YEAR, LAST_YEAR = 1970, 2199


class ScheduleError(ValueError):
    pass


@dataclass(frozen=True)
class CronSpec:
    expression: str  # five-field form croniter evaluates
    years: frozenset[int] | None  # the AWS form's year field, None for any year


def zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or name not in _zones():
        raise ScheduleError(f"{name!r} is not an IANA time zone name.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"{name!r} is not an IANA time zone name.") from None


_zone_names: set[str] | None = None


def _zones() -> set[str]:
    global _zone_names
    if _zone_names is None:
        _zone_names = available_timezones()
    return _zone_names


def parse_cron(expression: str) -> CronSpec:
    """Standard five fields, or AWS's six (minutes hours day-of-month month day-of-week year, with `?`)."""
    if not isinstance(expression, str) or len(expression) > 256:
        raise ScheduleError("A cron expression is a string.")
    fields = expression.split()
    if len(fields) == 5:
        spec = CronSpec(" ".join(fields), None)
    elif len(fields) == 6:
        minute, hour, dom, month, dow, year = fields
        if "?" not in (dom, dow):
            raise ScheduleError("In the six-field form, day-of-month or day-of-week is `?`.")
        spec = CronSpec(" ".join([minute, hour, dom, month, _aws_weekdays(dow)]), _years(year))
    else:
        raise ScheduleError("A cron expression has five fields, or six in the AWS form.")
    if not croniter.is_valid(spec.expression):
        raise ScheduleError(f"{expression!r} is not a valid cron expression.")
    return spec


def _aws_weekdays(field: str) -> str:
    """AWS numbers weekdays 1-7 from Sunday; cron numbers them 0-6."""
    if field == "?":
        return "?"

    def shift(match: re.Match) -> str:
        number = int(match.group(0))
        if not 1 <= number <= 7:
            raise ScheduleError("AWS weekdays are 1 (Sunday) to 7 (Saturday).")
        return str(number - 1)

    # Only numbers that are weekdays: not the N of `#N` (nth weekday) or of `/N` (step).
    return re.sub(r"(?<![#/])\b\d+\b", shift, field)


def _years(field: str) -> frozenset[int] | None:
    if field in ("*", "?"):
        return None
    years: set[int] = set()
    for part in field.split(","):
        match = re.fullmatch(r"(\d{4})(?:-(\d{4}))?(?:/(\d+))?", part)
        if not match:
            raise ScheduleError(f"The year field {field!r} is not valid.")
        start = int(match.group(1))
        end = int(match.group(2) or (start if match.group(3) is None else LAST_YEAR))
        step = int(match.group(3) or 1)
        if not FIRST_YEAR <= start <= end <= LAST_YEAR or step < 1:
            raise ScheduleError(f"The year field {field!r} is out of range.")
        years.update(range(start, end + 1, step))
    return frozenset(years)


def place(naive: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock time in `tz`, by the DST rules above."""
    first = naive.replace(tzinfo=tz, fold=0)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive:
        return first.astimezone(UTC)  # exists (for an ambiguous time, fold=0 is the first occurrence)
    # In a gap: find the transition, the first instant whose wall clock is past `naive`.
    low = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)  # the later offset: before the gap
    high = first.astimezone(UTC)
    if low > high:
        low, high = high, low
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def next_cron_fire(spec: CronSpec, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first firing strictly after the UTC instant `after`, or None (none within the lookahead, or ever).

    The search starts at the wall-clock time of `after`: no earlier wall time can be placed
    after `after` (a time in a gap lands on the transition, which is after `after` only if
    the whole gap is; a repeated time lands on its first occurrence, which is before any
    `after` in its second one).
    """
    try:
        local_after = after.astimezone(tz).replace(tzinfo=None)
        limit = None if spec.years is not None else after + timedelta(days=366 * MAX_LOOKAHEAD_YEARS)
        iterator = croniter(spec.expression, local_after, day_or=True)
        for _ in range(200_000):
            naive = iterator.get_next(datetime)
            if spec.years is not None and naive.year not in spec.years:
                later = [year for year in spec.years if year > naive.year]
                if not later:
                    return None
                # Jump to the next year the AWS year field allows, not minute by minute.
                iterator = croniter(spec.expression, datetime(min(later), 1, 1) - timedelta(seconds=1), day_or=True)
                continue
            instant = place(naive, tz)
            if limit is not None and instant > limit:
                return None
            if instant > after:
                return instant
    except CroniterBadDateError:  # a date that never comes (e.g. 30 February)
        return None
    except OverflowError:  # only near datetime's limits, which schedules are kept far from (in_range)
        raise ScheduleError(f"No firing can be computed after {after.isoformat()}.") from None
    return None


def never_fires(spec: CronSpec) -> bool:
    """Whether the day fields can never match (e.g. `0 0 30 2 *`): croniter finds no date."""
    try:
        croniter(spec.expression, datetime(2000, 1, 1), day_or=True).get_next(datetime)
    except CroniterBadDateError:
        return True
    return False


def one_time_fire(invocation_time: str, tz: ZoneInfo) -> datetime:
    """`invocation_time` is a naive ISO time read in the schedule's zone."""
    try:
        naive = datetime.fromisoformat(invocation_time)
    except (TypeError, ValueError):
        raise ScheduleError("invocation_time is a naive ISO 8601 time, e.g. 2026-12-01T09:30:00.") from None
    if naive.tzinfo is not None:
        raise ScheduleError("invocation_time has no offset: it is read in the schedule's timezone.")
    if not in_range(naive):
        raise ScheduleError(f"invocation_time is in the years {FIRST_YEAR} to {LAST_YEAR}.")
    return place(naive, tz)


def in_range(moment: datetime) -> bool:
    return FIRST_YEAR <= moment.year <= LAST_YEAR
