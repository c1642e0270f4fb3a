"""What travels to subscribers: resource state events, step events, their filters, and the error that
ends a subscriber that fell behind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from innominatus.db.models import Event, Resource


@dataclass(frozen=True, slots=True)
class StateEvent:
    sequence: int
    resource_id: str
    application_name: str
    team: str | None
    from_state: str | None
    to_state: str
    reason: str | None
    at: datetime
    id: int = field(default=0, compare=False, repr=False)  # the row's insert id
    # The resource row as it was when the event was published (loaded once, shared by every subscriber):
    # the writer's model object, or a plain row with the model's attribute names when read from the table.
    resource: Resource | None = field(default=None, compare=False, repr=False)
    # What a surface builds from the event, once for all its subscribers (e.g. the GraphQL object).
    views: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    foreign: bool = field(default=False, compare=False, repr=False)  # written by another process
    # An ACTIVE event that released resources parked behind its resource (claimable now). True where
    # unknown (read back from the table): it only costs the engine a claim pass.
    released: bool = field(default=True, compare=False, repr=False)

    @classmethod
    def from_row(
        cls, row: Event, resource: Resource | None = None, *, foreign: bool = False, released: bool = True
    ) -> StateEvent:
        assert row.sequence is not None, "only sequenced events are published"
        return cls(
            sequence=row.sequence,
            resource_id=row.resource_id,
            application_name=row.application_name,
            team=row.team,
            from_state=row.from_state,
            to_state=row.to_state,
            reason=row.reason,
            at=row.at,
            id=row.id,
            resource=resource,
            foreign=foreign,
            released=released,
        )


@dataclass(frozen=True, slots=True)
class EventFilter:
    application: str | None = None
    resource_id: str | None = None
    team: str | None = None  # None: every team's events (admins)

    def matches(self, event: StateEvent) -> bool:
        if self.team is not None and event.team != self.team:
            return False
        if self.application is not None and event.application_name != self.application:
            return False
        return self.resource_id is None or event.resource_id == self.resource_id


@dataclass(frozen=True, slots=True)
class StepEvent:
    """A step's status change or one of its log lines; live only (the step rows hold the record)."""

    workflow_id: str
    application_name: str
    team: str | None
    step_name: str
    status: str
    attempts: int
    log_line: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class StepFilter:
    workflow_id: str | None = None
    application: str | None = None
    team: str | None = None  # None: every team's steps (admins)

    def matches(self, event: StepEvent) -> bool:
        if self.team is not None and event.team != self.team:
            return False
        if self.workflow_id is not None and event.workflow_id != self.workflow_id:
            return False
        return self.application is None or event.application_name == self.application


class SubscriberTooSlow(Exception):
    """A subscriber's queue filled up: it is ended rather than allowed to hold unbounded memory."""

    def __init__(self, after_sequence: int | None) -> None:
        if after_sequence is None:
            message = "subscriber too slow: events arrived faster than it read them; subscribe again"
        else:
            message = (
                "subscriber too slow: events arrived faster than it read them; subscribe again with "
                f"afterSequence: {after_sequence} to lose nothing"
            )
        super().__init__(message)
        self.after_sequence = after_sequence


class Revoked(Exception):
    """The subscriber's credentials stopped being valid while it listened."""


class Watch(Protocol):
    """Ends subscriptions from outside, e.g. when the caller's token is revoked or expires."""

    @property
    def revoked(self) -> bool: ...

    def attach(self, end: Callable[[], None]) -> None: ...

    def detach(self, end: Callable[[], None]) -> None: ...
