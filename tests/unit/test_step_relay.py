"""Step events packed for other replicas: every payload fits PostgreSQL's NOTIFY limit, nothing is lost
or reordered in packing, and a log line too long for one payload is cut, not dropped."""

from __future__ import annotations

from datetime import UTC, datetime

from innominatus.events.relay import LINE_BYTES, PAYLOAD_BYTES, StepRelay, encode, unpack
from innominatus.events.types import StepEvent


def _event(i: int, line: str | None = "a log line") -> StepEvent:
    return StepEvent(
        workflow_id=f"wf-{i}",
        application_name="shop",
        team="payments",
        step_name="create",
        status="RUNNING",
        attempts=1,
        log_line=line,
        at=datetime(2026, 11, 28, 12, 0, i % 60, tzinfo=UTC),
    )


def _packed(events: list[StepEvent]) -> list[str]:
    relay = StepRelay(engine=None, origin="replica-a")  # type: ignore[arg-type]  # packing needs none
    for event in events:
        relay._waiting.append(encode(event))
    return relay._payloads()


def test_many_events_are_packed_in_order_into_payloads_that_fit() -> None:
    events = [_event(i, f"line {i} " + "x" * (i % 300)) for i in range(500)]
    payloads = _packed(events)
    assert 1 < len(payloads) < 500  # several events per NOTIFY
    assert all(len(p.encode()) < PAYLOAD_BYTES for p in payloads)
    decoded = [event for payload in payloads for event in unpack(payload)[1]]
    assert decoded == events
    assert {unpack(p)[0] for p in payloads} == {"replica-a"}


def test_a_line_too_long_for_a_payload_is_cut_and_marked() -> None:
    for line in ["é" * 50_000, '"\\' * 20_000, "\x01" * 20_000, "plain " * 5_000]:
        [payload] = _packed([_event(1, line)])
        assert len(payload.encode()) < PAYLOAD_BYTES
        [event] = unpack(payload)[1]
        assert event.log_line is not None and event.log_line.endswith("[... cut for other replicas]")
        assert len(event.log_line.encode()) <= LINE_BYTES + 64
        assert line.startswith(event.log_line.removesuffix(" [... cut for other replicas]")[:100])


def test_status_changes_without_a_line_travel_whole() -> None:
    event = _event(3, None)
    assert unpack(_packed([event])[0])[1] == [event]
