"""Resource state events and step events: durable rows, positions given after commit, and fan-out.

- `sequencer`: numbers committed events and publishes them, in order;
- `hub`: hands each published event to the matching subscribers' bounded mailboxes;
- `stream`: a subscription (replay from the table, then live);
- `types`: the events, filters and the errors that end a subscriber.
"""

from innominatus.events.hub import QUEUE_SIZE, EventHub
from innominatus.events.sequencer import Sequencer
from innominatus.events.stream import REPLAY_BATCH, load_events, steps, stream
from innominatus.events.types import (
    EventFilter,
    Revoked,
    StateEvent,
    StepEvent,
    StepFilter,
    SubscriberTooSlow,
    Watch,
)

__all__ = [
    "QUEUE_SIZE",
    "REPLAY_BATCH",
    "EventFilter",
    "EventHub",
    "Revoked",
    "Sequencer",
    "StateEvent",
    "StepEvent",
    "StepFilter",
    "SubscriberTooSlow",
    "Watch",
    "load_events",
    "steps",
    "stream",
]
