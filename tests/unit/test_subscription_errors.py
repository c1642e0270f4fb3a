"""How a live subscription that the server ends reads to its client."""

from __future__ import annotations

from innominatus.api.schema import _ended
from innominatus.events import Revoked, SubscriberTooSlow


def test_too_slow_says_where_to_resume() -> None:
    error = _ended(SubscriberTooSlow(41))
    assert error.extensions == {"code": "SUBSCRIBER_TOO_SLOW", "afterSequence": 41}
    assert "afterSequence: 41" in error.message


def test_too_slow_step_stream_has_no_position() -> None:
    error = _ended(SubscriberTooSlow(None))
    assert error.extensions == {"code": "SUBSCRIBER_TOO_SLOW"}
    assert "subscribe again" in error.message


def test_revoked_token_is_unauthenticated() -> None:
    assert _ended(Revoked()).extensions == {"code": "UNAUTHENTICATED"}
