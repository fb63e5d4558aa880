"""DESIGN §7's time rules, exactly, with a controllable clock.

Cron is evaluated on wall-clock time in the schedule's IANA zone:
- a wall time that does not exist (spring forward) fires at the first instant after the gap,
  once, even when several wall times fall in the gap;
- a wall time that exists twice (fall back) fires once, at its first occurrence: nothing
  fires in the repeated stretch;
- firings are strictly increasing in UTC.

The matrix: America/New_York, Europe/Paris, Europe/Dublin (whose tzdata has negative DST:
IST is standard time and winter GMT is the "DST" one; only wall clocks matter here) and
Australia/Lord_Howe (a 30-minute shift), for daily 01:30, daily 02:30, hourly and every 15
minutes, over both transitions of 2026 and one of 2027. The expected firings come from a table
written by hand and from an independent oracle that walks the UTC timeline minute by minute.
The same matrix is then driven through `tick(now=...)`, missed runs across a transition, and
one-time schedules in a gap and in an overlap; last, the AWS six-field form.
"""

import bisect
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from zoneinfo import ZoneInfo

from scheduler import services, timing
from scheduler.models import ActiveSchedule, Firing

H, M = timedelta(hours=1), timedelta(minutes=1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- The matrix ------------------------------------------------------------------------------------

# zone, local date, kind, the wall-clock stretch that is skipped or repeated, the UTC instant of
# the transition, and the shift (how far the wall clock jumps).
TRANSITIONS = [
    ("America/New_York", "2026-03-08", "gap", "02:00", "03:00", "2026-03-08T07:00", H),
    ("America/New_York", "2026-11-01", "repeat", "01:00", "02:00", "2026-11-01T06:00", H),
    ("America/New_York", "2027-03-14", "gap", "02:00", "03:00", "2027-03-14T07:00", H),
    ("Europe/Paris", "2026-03-29", "gap", "02:00", "03:00", "2026-03-29T01:00", H),
    ("Europe/Paris", "2026-10-25", "repeat", "02:00", "03:00", "2026-10-25T01:00", H),
    ("Europe/Paris", "2027-10-31", "repeat", "02:00", "03:00", "2027-10-31T01:00", H),
    ("Europe/Dublin", "2026-03-29", "gap", "01:00", "02:00", "2026-03-29T01:00", H),
    ("Europe/Dublin", "2026-10-25", "repeat", "01:00", "02:00", "2026-10-25T01:00", H),
    ("Europe/Dublin", "2027-03-28", "gap", "01:00", "02:00", "2027-03-28T01:00", H),
    ("Australia/Lord_Howe", "2026-04-05", "repeat", "01:30", "02:00", "2026-04-04T15:00", 30 * M),
    ("Australia/Lord_Howe", "2026-10-04", "gap", "02:00", "02:30", "2026-10-03T15:30", 30 * M),
    ("Australia/Lord_Howe", "2027-10-03", "gap", "02:00", "02:30", "2027-10-02T15:30", 30 * M),
]

# Each cron with an independent predicate on wall-clock minutes (for the oracle).
CRONS = {
    "30 1 * * *": lambda wall: (wall.hour, wall.minute) == (1, 30),
    "30 2 * * *": lambda wall: (wall.hour, wall.minute) == (2, 30),
    "0 * * * *": lambda wall: wall.minute == 0,
    "*/15 * * * *": lambda wall: wall.minute % 15 == 0,
}

# The daily firings, in UTC, worked out by hand from the rules.
DAILY = {
    ("America/New_York", "2026-03-08"): ("2026-03-08T06:30", "2026-03-08T07:00"),  # 02:30 in the gap: 03:00 EDT
    ("America/New_York", "2026-11-01"): ("2026-11-01T05:30", "2026-11-01T07:30"),  # 01:30 twice: the EDT one
    ("America/New_York", "2027-03-14"): ("2027-03-14T06:30", "2027-03-14T07:00"),
    ("Europe/Paris", "2026-03-29"): ("2026-03-29T00:30", "2026-03-29T01:00"),  # 02:30 in the gap: 03:00 CEST
    ("Europe/Paris", "2026-10-25"): ("2026-10-24T23:30", "2026-10-25T00:30"),  # 02:30 twice: the CEST one
    ("Europe/Paris", "2027-10-31"): ("2027-10-30T23:30", "2027-10-31T00:30"),
    ("Europe/Dublin", "2026-03-29"): ("2026-03-29T01:00", "2026-03-29T01:30"),  # 01:30 in the gap: 02:00 IST
    ("Europe/Dublin", "2026-10-25"): ("2026-10-25T00:30", "2026-10-25T02:30"),  # 01:30 twice: the IST one
    ("Europe/Dublin", "2027-03-28"): ("2027-03-28T01:00", "2027-03-28T01:30"),
    ("Australia/Lord_Howe", "2026-04-05"): ("2026-04-04T14:30", "2026-04-04T16:00"),  # 01:30 twice: the +11 one
    ("Australia/Lord_Howe", "2026-10-04"): ("2026-10-03T15:00", "2026-10-03T15:30"),  # 02:30 exists: the transition
    ("Australia/Lord_Howe", "2027-10-03"): ("2027-10-02T15:00", "2027-10-02T15:30"),
}

# Firings per local day. Spring forward: the skipped hour's wall times collapse into one firing
# at the end of the gap, which is also the first wall time after it (hourly in New York: 00:00,
# 01:00, then 03:00 EDT: 23). Fall back: the repeated hour fires at its first occurrence only,
# so an hourly cron fires 24 times on a 25-hour day. Lord Howe skips only 02:00-02:30: hourly
# still fires 24 times (02:00 moves to 02:30), every 15 minutes 94 (02:00 and 02:15 join 02:30).
COUNTS = {
    ("0 * * * *", "gap"): 23,
    ("0 * * * *", "repeat"): 24,
    ("*/15 * * * *", "gap"): 92,
    ("*/15 * * * *", "repeat"): 96,
}
LORD_HOWE_GAP_COUNTS = {"0 * * * *": 24, "*/15 * * * *": 94}


def cases():
    for transition in TRANSITIONS:
        for cron in CRONS:
            yield pytest.param(transition, cron, id=f"{transition[0]}-{transition[1]}-{cron}")


def day_bounds(zone: str, date: str) -> tuple[datetime, datetime]:
    """The UTC instants of local midnight of `date` and of the day after (midnight always exists here)."""
    tz = ZoneInfo(zone)
    start = datetime.fromisoformat(date).replace(tzinfo=tz)
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


def firings(cron: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """next_cron_fire iterated from just before `start` while before `end`."""
    spec, tz = timing.parse_cron(cron), timing.zone(zone)
    found, moment = [], start - timedelta(microseconds=1)
    while True:
        moment = timing.next_cron_fire(spec, tz, moment)
        assert moment is not None
        if moment >= end:
            return found
        found.append(moment)


def oracle(cron: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """The rule, by brute force on the UTC timeline, without fold or croniter.

    Each wall-clock minute W matching the cron fires at the first UTC minute whose wall clock
    reads W or later: W's first occurrence when it exists, the end of the gap when it does not.
    (Every transition here is on a whole minute, so minutes are exact.)
    """
    tz = ZoneInfo(zone)
    first, last = start - timedelta(days=1), end + timedelta(days=1)
    instants = [first + i * M for i in range(int((last - first) / M))]
    walls = [u.astimezone(tz).replace(tzinfo=None) for u in instants]
    running, highest = [], walls[0]
    for wall in walls:
        highest = max(highest, wall)
        running.append(highest)  # non-decreasing: bisect finds the first instant reading >= W
    local_start, local_end = walls[0], walls[-1]
    found = set()
    wall = local_start.replace(second=0, microsecond=0)
    while wall <= local_end:
        if CRONS[cron](wall):
            index = bisect.bisect_left(running, wall)
            if index < len(instants):
                found.add(instants[index])
        wall += M
    return sorted(moment for moment in found if start <= moment < end)


def test_the_transition_table_matches_tzdata():
    for zone, _date, kind, _from, _to, instant, shift in TRANSITIONS:
        tz, at = ZoneInfo(zone), utc(instant)
        before, after = (at - M).astimezone(tz).utcoffset(), at.astimezone(tz).utcoffset()
        assert after - before == (shift if kind == "gap" else -shift), zone


def test_dublin_has_negative_dst_in_tzdata_and_the_same_wall_clock_as_london():
    """IST (summer) is Dublin's standard time; winter GMT carries DST -1 h. Only offsets matter:
    London has positive DST and the same offsets, so every firing is the same."""
    dublin = ZoneInfo("Europe/Dublin")
    winter, summer = datetime(2026, 1, 15, 12, tzinfo=dublin), datetime(2026, 7, 15, 12, tzinfo=dublin)
    assert (winter.utcoffset(), summer.utcoffset()) == (timedelta(0), H)
    assert winter.dst() in (-H, timedelta(0))  # -1 h with the main tzdata format, 0 with rearguard
    start, end = utc("2026-01-01T00:00"), utc("2028-01-01T00:00")
    for cron in ("30 1 * * *", "30 2 * * *"):
        assert firings(cron, "Europe/Dublin", start, end) == firings(cron, "Europe/London", start, end)
    window = (utc("2026-03-28T20:00"), utc("2026-03-29T06:00"))
    assert firings("*/15 * * * *", "Europe/Dublin", *window) == firings("*/15 * * * *", "Europe/London", *window)


@pytest.mark.parametrize(("transition", "cron"), list(cases()))
def test_the_firings_of_a_transition_day(transition, cron):
    zone, date, kind, stretch_from, stretch_to, instant, shift = transition
    tz, at = ZoneInfo(zone), utc(instant)
    start, end = day_bounds(zone, date)
    fired = firings(cron, zone, start, end)

    assert fired == oracle(cron, zone, start, end)
    assert all(a < b for a, b in zip(fired, fired[1:])), "strictly increasing in UTC"
    walls = [moment.astimezone(tz).replace(tzinfo=None) for moment in fired]
    assert max(Counter(walls).values()) == 1, "no wall time fires twice"

    if cron.startswith("30 "):
        expected = DAILY[(zone, date)][0 if cron == "30 1 * * *" else 1]
        assert fired == [utc(expected)]
    else:
        expected = LORD_HOWE_GAP_COUNTS[cron] if (zone, kind) == ("Australia/Lord_Howe", "gap") else COUNTS[(cron, kind)]
        assert len(fired) == expected

    day = datetime.fromisoformat(date)
    low, high = (day.replace(hour=int(t[:2]), minute=int(t[3:])) for t in (stretch_from, stretch_to))
    in_stretch = [
        wall for wall in (day + i * M for i in range(24 * 60)) if CRONS[cron](wall) and low <= wall < high
    ]
    if kind == "gap":
        # Every wall time in the gap fires at the first instant after it, once in all.
        assert not any(low <= wall < high for wall in walls)
        assert (at in fired) == (bool(in_stretch) or CRONS[cron](high))
        if in_stretch:
            assert fired.count(at) == 1 and at.astimezone(tz).replace(tzinfo=None) == high
    else:
        # The repeated stretch fires at its first occurrence, never in its second one.
        assert all(moment.astimezone(tz).fold == 0 for moment in fired)
        assert not any(at <= moment < at + shift for moment in fired)
        repeated = [moment for moment in fired if low <= moment.astimezone(tz).replace(tzinfo=None) < high]
        assert len(repeated) == len(in_stretch)
        assert all(moment < at for moment in repeated), "first occurrence: before the clocks go back"
        if cron == "0 * * * *" and zone != "Australia/Lord_Howe":
            # The hour after the first 01:00 (New York) is the repeated one: two hours to the next firing.
            first = repeated[0]
            assert fired[fired.index(first) + 1] - first == 2 * H


@pytest.mark.parametrize(("transition", "cron"), list(cases()))
def test_the_next_firing_after_any_instant_around_a_transition(transition, cron):
    """From every minute and half-minute within 3 h of the transition, including instants inside
    a repeated stretch's second occurrence: the next firing is the oracle's next one."""
    zone, _date, _kind, _from, _to, instant, _shift = transition
    at = utc(instant)
    expected = oracle(cron, zone, at - timedelta(days=1), at + timedelta(days=2))
    spec, tz = timing.parse_cron(cron), timing.zone(zone)
    for step in range(-6 * 60, 6 * 60):
        after = at + step * timedelta(seconds=30)
        assert timing.next_cron_fire(spec, tz, after) == expected[bisect.bisect_right(expected, after)], after


def test_every_firing_of_2026_and_2027_is_strictly_increasing_and_each_day_is_right():
    """Daily crons over two whole years in every zone: one firing per local day, in order."""
    for zone in ("America/New_York", "Europe/Paris", "Europe/Dublin", "Australia/Lord_Howe"):
        tz = ZoneInfo(zone)
        for cron in ("30 1 * * *", "30 2 * * *"):
            fired = firings(cron, zone, *day_bounds(zone, "2026-01-01")[:1], day_bounds(zone, "2027-12-31")[1])
            assert all(a < b for a, b in zip(fired, fired[1:]))
            days = [moment.astimezone(tz).date() for moment in fired]
            assert len(days) == len(set(days)) == 730, (zone, cron)


# --- One-time schedules -----------------------------------------------------------------------------

ONE_TIME = [
    # zone, invocation_time in a gap, its firing; in an overlap, its firing (the first occurrence)
    ("America/New_York", "2026-03-08T02:30:00", "2026-03-08T07:00", "2026-11-01T01:30:00", "2026-11-01T05:30"),
    ("Europe/Paris", "2026-03-29T02:30:00", "2026-03-29T01:00", "2026-10-25T02:30:00", "2026-10-25T00:30"),
    ("Europe/Dublin", "2026-03-29T01:30:00", "2026-03-29T01:00", "2026-10-25T01:30:00", "2026-10-25T00:30"),
    ("Australia/Lord_Howe", "2026-10-04T02:15:00", "2026-10-03T15:30", "2026-04-05T01:45:00", "2026-04-04T14:45"),
]


@pytest.mark.parametrize(("zone", "gap", "gap_fires", "overlap", "overlap_fires"), ONE_TIME)
def test_one_time_invocation_in_a_gap_and_in_an_overlap(zone, gap, gap_fires, overlap, overlap_fires):
    tz = timing.zone(zone)
    assert timing.one_time_fire(gap, tz) == utc(gap_fires)
    assert timing.one_time_fire(overlap, tz) == utc(overlap_fires)
    assert timing.one_time_fire(overlap, tz).astimezone(tz).fold == 0


def test_one_time_invocation_time_is_naive_iso():
    tz = timing.zone("UTC")
    for bad in ("2026-03-08T02:30:00-05:00", "2026-03-08T02:30:00Z", "tomorrow", "", None, 1234):
        with pytest.raises(timing.ScheduleError):
            timing.one_time_fire(bad, tz)


def test_times_out_of_the_years_1970_to_2199_are_refused_not_overflowed():
    for text, zone in (("0001-01-01T00:00:00", "Asia/Tokyo"), ("9999-12-31T23:59:59", "America/New_York"),
                       ("1969-12-31T23:59:59", "UTC"), ("2200-01-01T00:00:00", "UTC")):
        with pytest.raises(timing.ScheduleError):
            timing.one_time_fire(text, timing.zone(zone))
    assert timing.one_time_fire("2199-12-31T23:59:59", timing.zone("UTC")) == utc("2199-12-31T23:59:59")
    with pytest.raises(timing.ScheduleError):
        timing.next_cron_fire(timing.parse_cron("0 9 * * *"), timing.zone("Asia/Tokyo"), utc("9999-12-30T00:00"))


# --- The AWS six-field form -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # minutes hours day-of-month month day-of-week year; weekdays 1-7 from Sunday
        # Monday to Friday of 2030 only (1 January 2030 is a Tuesday)
        ("0 12 ? * 2-6 2030", "2026-11-22T00:00", ["2030-01-01T12:00", "2030-01-02T12:00", "2030-01-03T12:00",
                                                   "2030-01-04T12:00", "2030-01-07T12:00"]),  # fmt: skip
        ("0 9 ? * 1 *", "2026-11-22T10:00", ["2026-11-29T09:00", "2026-12-06T09:00"]),  # 1 = Sunday
        ("0 9 ? * 7 *", "2026-11-22T10:00", ["2026-11-28T09:00", "2026-12-05T09:00"]),  # 7 = Saturday
        ("0 9 ? * 1,7 *", "2026-11-22T10:00", ["2026-11-28T09:00", "2026-11-29T09:00"]),
        ("0 9 ? * MON-FRI *", "2026-11-27T10:00", ["2026-11-30T09:00"]),  # names are accepted
        ("0 9 ? * 6#3 *", "2026-11-01T00:00", ["2026-11-20T09:00", "2026-12-18T09:00"]),  # third Friday
        ("0 9 15 * ? *", "2026-11-22T00:00", ["2026-12-15T09:00", "2027-01-15T09:00"]),
        ("30 8 1 1 ? 2027,2029", "2026-11-22T00:00", ["2027-01-01T08:30", "2029-01-01T08:30", None]),
        ("0 0 29 2 ? 2027-2030", "2026-11-22T00:00", ["2028-02-29T00:00", None]),
        ("* * ? * * 2030", "2026-11-22T00:00", ["2030-01-01T00:00", "2030-01-01T00:01"]),  # a jump, not a crawl
        ("0 0 1 1 ? 2045", "2026-11-22T00:00", ["2045-01-01T00:00", None]),  # beyond the 5-year lookahead
        ("0 0 1 1 ? 2020", "2026-11-22T00:00", [None]),
    ],
)
def test_the_aws_form(expression, after, expected):
    spec, tz = timing.parse_cron(expression), timing.zone("UTC")
    found, moment = [], utc(after)
    for _ in expected:
        moment = timing.next_cron_fire(spec, tz, moment) if moment is not None else None
        found.append(moment)
    assert found == [utc(text) if text else None for text in expected]


def test_the_aws_form_follows_the_dst_rules():
    spec, tz = timing.parse_cron("30 2 ? * 1 2026"), timing.zone("America/New_York")  # Sundays at 02:30
    assert timing.next_cron_fire(spec, tz, utc("2026-03-02T00:00")) == utc("2026-03-08T07:00")  # in the gap
    assert timing.next_cron_fire(spec, tz, utc("2026-10-26T00:00")) == utc("2026-11-01T07:30")


@pytest.mark.parametrize(
    "expression",
    [
        "0 12 * * 1 2027",  # six fields need `?` in day-of-month or day-of-week
        "0 12 ? * 0 *",  # AWS weekdays are 1-7
        "0 12 ? * 8 *",
        "0 12 ? * 1 1969",
        "0 12 ? * 1 20x7",
        "0 12 ? * 1 2030-2027",
        "0 12 ? * 1 2027 *",
        "0 12 * *",
        "61 12 ? * 1 *",
        "",
        None,
    ],
)
def test_bad_cron_expressions_are_refused(expression):
    with pytest.raises(timing.ScheduleError):
        timing.parse_cron(expression)


def test_a_date_that_never_comes_never_fires():
    spec = timing.parse_cron("0 0 30 2 *")
    assert timing.never_fires(spec) and timing.next_cron_fire(spec, timing.zone("UTC"), utc("2026-01-01T00:00")) is None
    assert not timing.never_fires(timing.parse_cron("0 0 29 2 *"))


def test_zone_names_are_iana():
    assert timing.zone("Australia/Lord_Howe").key == "Australia/Lord_Howe"
    for bad in ("Mars/Olympus", "EST5EDT ", "", None, "../etc/passwd"):
        with pytest.raises(timing.ScheduleError):
            timing.zone(bad)


# --- The same rules through tick(now=...) ---------------------------------------------------------


@pytest.fixture
def fleet(db, monkeypatch):
    """Active schedules written straight into the table, and the execution start faked: the tick's
    own decisions (what fires when, what is skipped) are what these tests watch."""
    from blobs.models import BlobType
    from blobs.tests.factories import BlobFactory

    blob = BlobFactory(type=BlobType.SCHEDULER)
    revision = blob.revisions.get()
    started: list[tuple[str, datetime]] = []

    def start(schedule, memo):
        started.append((str(schedule.schedule_id), schedule.next_fire_at))
        return Firing.Status.SUCCESS, {"execution_id": str(uuid.uuid4())}

    monkeypatch.setattr(services, "_start_execution", start)

    def add(*, after: datetime, **fields) -> ActiveSchedule:
        document = {
            "id": str(uuid.uuid4()),
            "enabled": True,
            "overlap": "allow",
            "invocation_target_type": "workflow",
            "invocation_target": {
                "target": {"org": blob.org.alias, "blob": "flows", "revision": "default"},
                "workflow": {"definition": "approve"},
            },
            **fields,
        }
        return ActiveSchedule.objects.create(
            org=blob.org, blob=blob, revision=revision, schedule_id=document["id"], document=document,
            next_fire_at=services.first_fire(document, after),
        )  # fmt: skip

    add.started = started
    return add


def fired_at(schedule: ActiveSchedule, status: str | None = None) -> list[datetime]:
    rows = Firing.objects.filter(schedule_id=schedule.schedule_id)
    if status:
        rows = rows.filter(status=status)
    return sorted(rows.values_list("scheduled_for", flat=True))


def run_clock(start: datetime, end: datetime, lateness=(0, 1, 7, 30, 59)) -> int:
    """Tick at every due moment (a little late, within the grace) until nothing is due before `end`.

    Before each real tick, one a microsecond early must fire nothing."""
    ticks = 0
    while True:
        due = ActiveSchedule.objects.filter(next_fire_at__isnull=False).order_by("next_fire_at").first()
        if due is None or due.next_fire_at >= end:
            return ticks
        assert due.next_fire_at >= start
        assert services.tick(now=due.next_fire_at - timedelta(microseconds=1)) == 0, "nothing fires early"
        late = timedelta(seconds=lateness[ticks % len(lateness)])
        assert services.tick(now=due.next_fire_at + late) >= 1
        ticks += 1


@pytest.mark.parametrize("transition", TRANSITIONS, ids=[f"{t[0]}-{t[1]}" for t in TRANSITIONS])
def test_tick_fires_the_matrix_around_a_transition(fleet, settings, transition):
    settings.SCHEDULER_GRACE_SECONDS = 60
    zone, _date, _kind, _from, _to, instant, _shift = transition
    at = utc(instant)
    start, end = at - 3 * H, at + 3 * H
    schedules = {
        cron: fleet(after=start, repeat="recurring_cron", cron_expression=cron, timezone=zone) for cron in CRONS
    }
    run_clock(start, end)
    for cron, schedule in schedules.items():
        fired, expected = fired_at(schedule), oracle(cron, zone, start, end + timedelta(days=1))
        assert fired == fired_at(schedule, "success") == expected[: len(fired)], cron
        assert [moment for moment in fired if moment < end] == oracle(cron, zone, start, end), cron
        schedule.refresh_from_db()
        assert schedule.next_fire_at == expected[len(fired)], cron
    # A stale row (as a second tick, or a retried one, would see it) fires nothing twice.
    firings_before = Firing.objects.count()
    for schedule in schedules.values():
        first = fired_at(schedule)[0]
        ActiveSchedule.objects.filter(id=schedule.id).update(next_fire_at=first)
        assert services.tick(now=first + timedelta(seconds=1)) == 1
    assert Firing.objects.count() == firings_before
    assert len(fleet.started) == firings_before


def test_tick_counts_whole_transition_days(fleet, settings):
    """Hourly in New York: 23 firings on the spring-forward day, 24 on the 25-hour fall-back day."""
    settings.SCHEDULER_GRACE_SECONDS = 60
    for date, count in (("2026-03-08", 23), ("2026-11-01", 24)):
        start, end = day_bounds("America/New_York", date)
        schedule = fleet(after=start, repeat="recurring_cron", cron_expression="0 * * * *", timezone="America/New_York")
        run_clock(start, end)
        fired = fired_at(schedule, "success")
        assert len(fired) == count
        ActiveSchedule.objects.filter(id=schedule.id).delete()
    fall = [m for m in fired if utc("2026-11-01T04:00") <= m <= utc("2026-11-01T08:00")]
    assert fall == [utc("2026-11-01T04:00"), utc("2026-11-01T05:00"), utc("2026-11-01T07:00"), utc("2026-11-01T08:00")]


def test_after_downtime_across_a_gap_older_runs_are_skipped_and_the_latest_within_grace_fires(fleet, settings):
    """New York, every 15 minutes, the scheduler down from 01:20 EST to 03:00:30 EDT: 01:30 and
    01:45 are recorded as skipped; 02:00-02:45 and 03:00 are one occurrence (03:00 EDT), 30 s
    late, within the grace: it fires. No burst: one execution."""
    settings.SCHEDULER_GRACE_SECONDS = 60
    schedule = fleet(after=utc("2026-03-08T06:20"), repeat="recurring_cron", cron_expression="*/15 * * * *",
                     timezone="America/New_York")  # fmt: skip
    assert services.tick(now=utc("2026-03-08T07:00:30")) == 1
    assert fired_at(schedule, "skipped") == [utc("2026-03-08T06:30"), utc("2026-03-08T06:45")]
    assert fired_at(schedule, "success") == [utc("2026-03-08T07:00")]
    assert len(fleet.started) == 1
    schedule.refresh_from_db()
    assert schedule.next_fire_at == utc("2026-03-08T07:15")
    reasons = Firing.objects.filter(schedule_id=schedule.schedule_id, status="skipped").values_list("result", flat=True)
    assert all(reason["reason"].startswith("missed") for reason in reasons)


def test_after_downtime_past_the_grace_everything_is_skipped(fleet, settings):
    """Down across the fall-back hour: hourly 01:00 EDT and 02:00 EST are missed (the repeated
    01:00 EST is no occurrence at all), 03:00 EST is 10 minutes late: skipped too."""
    settings.SCHEDULER_GRACE_SECONDS = 60
    schedule = fleet(after=utc("2026-11-01T04:30"), repeat="recurring_cron", cron_expression="0 * * * *",
                     timezone="America/New_York")  # fmt: skip
    services.tick(now=utc("2026-11-01T08:10"))
    assert fired_at(schedule, "skipped") == [utc("2026-11-01T05:00"), utc("2026-11-01T07:00"), utc("2026-11-01T08:00")]
    assert fleet.started == []
    schedule.refresh_from_db()
    assert schedule.next_fire_at == utc("2026-11-01T09:00")


def test_a_very_long_downtime_records_a_bounded_history_and_still_fires_the_latest(fleet, settings):
    settings.SCHEDULER_GRACE_SECONDS = 60
    schedule = fleet(after=utc("2026-06-01T00:00"), repeat="recurring_cron", cron_expression="*/15 * * * *", timezone="UTC")
    services.tick(now=utc("2026-06-10T00:00:20"))  # 9 days: 864 occurrences
    skipped = fired_at(schedule, "skipped")
    assert len(skipped) == services.MAX_RECORDED_MISSES
    assert skipped == [utc("2026-06-01T00:00") + i * 15 * M for i in range(services.MAX_RECORDED_MISSES)]
    assert fired_at(schedule, "success") == [utc("2026-06-10T00:00")]
    last = Firing.objects.get(schedule_id=schedule.schedule_id, scheduled_for=skipped[-1])
    assert last.result["reason"].startswith("missed") and "not recorded one by one" in last.result["reason"]
    assert len(fleet.started) == 1
    schedule.refresh_from_db()
    assert schedule.next_fire_at == utc("2026-06-10T00:15")


@pytest.mark.parametrize(("zone", "gap", "gap_fires", "overlap", "overlap_fires"), ONE_TIME)
def test_tick_fires_one_time_schedules_in_a_gap_and_an_overlap_once(fleet, zone, gap, gap_fires, overlap, overlap_fires):
    for invocation_time, fires in ((gap, utc(gap_fires)), (overlap, utc(overlap_fires))):
        schedule = fleet(after=utc("2026-01-01T00:00"), repeat="one_time", invocation_time=invocation_time, timezone=zone)
        assert schedule.next_fire_at == fires
        assert services.tick(now=fires - timedelta(seconds=1)) == 0
        assert services.tick(now=fires + timedelta(seconds=2)) == 1
        assert services.tick(now=fires + timedelta(hours=1)) == 0  # e.g. the second occurrence of an overlap
        schedule.refresh_from_db()
        assert (schedule.state, schedule.next_fire_at) == ("completed", None)
        assert fired_at(schedule, "success") == [fires]
    assert len(fleet.started) == 2
