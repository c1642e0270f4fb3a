"""The in-process fan-out: each published event is handed, as one shared object, to every matching
subscriber's bounded mailbox. No I/O here; `published` is the highest sequence handed out so far (every
lower one was handed out before it), which is where a subscriber's replay ends and its live part starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from innominatus.events.mailbox import Mailbox
from innominatus.events.types import EventFilter, StateEvent, StepEvent, StepFilter

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000  # events a subscriber may have waiting before it is ended as too slow

StateMailbox = Mailbox[EventFilter, StateEvent]
StepMailbox = Mailbox[StepFilter, StepEvent]


class EventHub:
    def __init__(self, queue_size: int | None = None) -> None:
        self.queue_size = queue_size
        self.published: int | None = None  # None until the sequencer has read where the stream stands
        # Subscribers by the application they filter on (None: all applications), so an event costs its
        # own application's subscribers, not everyone's.
        self._by_application: dict[str | None, set[StateMailbox]] = {}
        self._listeners: list[Callable[[StateEvent], None]] = []
        self._step_subscribers: set[StepMailbox] = set()

    # ---------------------------------------------------------------------------------- state events

    def add_listener(self, listener: Callable[[StateEvent], None]) -> None:
        """A synchronous callback for every published event (the engine's wake-up)."""
        self._listeners.append(listener)

    def publish(self, events: Iterable[StateEvent]) -> None:
        """Hand out events in sequence order (the sequencer's job: it calls this and nothing else does)."""
        for event in events:
            self.published = event.sequence
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("event listener failed")
            for key in (event.application_name, None):
                for mailbox in self._by_application.get(key, ()):
                    if mailbox.filter.matches(event):
                        mailbox.put(event)

    def subscribe(self, flt: EventFilter, limit: int | None = None) -> StateMailbox:
        mailbox: StateMailbox = Mailbox(flt, limit or self.queue_size or QUEUE_SIZE)
        self._by_application.setdefault(flt.application, set()).add(mailbox)
        return mailbox

    def unsubscribe(self, mailbox: StateMailbox) -> None:
        subscribers = self._by_application.get(mailbox.filter.application)
        if subscribers is not None:
            subscribers.discard(mailbox)
            if not subscribers:
                del self._by_application[mailbox.filter.application]

    def overflow_all(self) -> None:
        """End every state subscriber as too slow: the stream skipped ahead, they catch up by replay."""
        for subscribers in self._by_application.values():
            for mailbox in subscribers:
                mailbox.overflow()

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._by_application.values()) + len(self._step_subscribers)

    # ----------------------------------------------------------------------------------- step events

    def publish_step(self, event: StepEvent) -> None:
        for mailbox in self._step_subscribers:
            if mailbox.filter.matches(event):
                mailbox.put(event)

    def subscribe_steps(self, flt: StepFilter, limit: int | None = None) -> StepMailbox:
        mailbox: StepMailbox = Mailbox(flt, limit or self.queue_size or QUEUE_SIZE)
        self._step_subscribers.add(mailbox)
        return mailbox

    def unsubscribe_steps(self, mailbox: StepMailbox) -> None:
        self._step_subscribers.discard(mailbox)
