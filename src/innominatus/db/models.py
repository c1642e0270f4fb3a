"""The tables. Alembic's first revision creates exactly these; later changes come as new revisions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """SQLite drops timezone offsets; store UTC and hand back aware datetimes on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite makes only INTEGER PRIMARY KEY the auto-numbered rowid.
BigIntType = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Application(Base):
    __tablename__ = "applications"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    team: Mapped[str | None] = mapped_column(String(128))
    revision: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set by deleteApplication; the application leaves `applications` once every resource is DELETED.
    delete_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ApplicationRevision(Base):
    __tablename__ = "application_revisions"
    __table_args__ = (
        UniqueConstraint("application_id", "revision", name="uq_application_revisions_app_rev"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("applications.id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    spec_text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Resource(Base):
    __tablename__ = "resources"
    __table_args__ = (
        # One live resource per name; DELETED ones stay as history and a name may be reused.
        Index(
            "uq_resources_live_name",
            "application_id",
            "name",
            unique=True,
            sqlite_where=text("state != 'DELETED'"),
            postgresql_where=text("state != 'DELETED'"),
        ),
        Index("ix_resources_state", "state"),
        Index("ix_resources_application_name", "application_name"),
        # What a claim pass reads: REQUESTED rows not parked behind a dependency, oldest first. Parked rows
        # (however many) never enter it, so a pass costs the batch, not the backlog. It leads with the
        # claim's own conditions, or SQLite (no statistics) walks the parked rows by ix_resources_state.
        Index(
            "ix_resources_claimable",
            "state",
            "waiting_for",
            "created_at",
            sqlite_where=text("state = 'REQUESTED' AND waiting_for IS NULL"),
            postgresql_where=text("state = 'REQUESTED' AND waiting_for IS NULL"),
        ),
        Index("ix_resources_waiting", "application_id", "waiting_for"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    application_id: Mapped[str] = mapped_column(ForeignKey("applications.id", ondelete="CASCADE"))
    # Denormalised so list filters and event scoping need no join.
    application_name: Mapped[str] = mapped_column(String(63))
    team: Mapped[str | None] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(63))
    type: Mapped[str] = mapped_column(String(128))
    resource_class: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))
    properties: Mapped[dict[str, Any]] = mapped_column(
        JSONType, default=dict
    )  # as written: placeholders kept
    depends_on: Mapped[list[str]] = mapped_column(
        JSONType, default=list
    )  # names of resources its params reference
    provider: Mapped[str | None] = mapped_column(String(128))
    outputs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error_message: Mapped[str | None] = mapped_column(Text)
    workflow_execution_id: Mapped[str | None] = mapped_column(String(36))
    # A REQUESTED resource parked until the named dependency becomes ACTIVE (lifecycle.release_dependents);
    # NULL: claims look at it.
    waiting_for: Mapped[str | None] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Event(Base):
    """The log of state changes, one row each, written in the transaction that makes it: what
    subscriptions stream and replay, and the audit trail (a resource's transitions). `id` is the insert
    order; `sequence`, the global position subscribers resume from, is given after commit by
    events.sequencer (NULL until then), so it follows commit order."""

    __tablename__ = "events"
    __table_args__ = (
        Index("uq_events_sequence", "sequence", unique=True),
        Index(
            "ix_events_unsequenced",
            "id",
            sqlite_where=text("sequence IS NULL"),
            postgresql_where=text("sequence IS NULL"),
        ),
        Index("ix_events_application_name_sequence", "application_name", "sequence"),
        Index("ix_events_team_sequence", "team", "sequence"),
        # AUTOINCREMENT so SQLite never hands out an id twice.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntType, primary_key=True, autoincrement=True)
    sequence: Mapped[int | None] = mapped_column(BigIntType)
    resource_id: Mapped[str] = mapped_column(String(36), index=True)
    application_name: Mapped[str] = mapped_column(String(63))
    team: Mapped[str | None] = mapped_column(String(128))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WorkflowExecution(Base):
    __tablename__ = "workflow_executions"
    __table_args__ = (Index("ix_workflow_executions_application_name", "application_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    resource_id: Mapped[str] = mapped_column(ForeignKey("resources.id", ondelete="CASCADE"), index=True)
    application_name: Mapped[str] = mapped_column(String(63))
    team: Mapped[str | None] = mapped_column(String(128), index=True)
    workflow_name: Mapped[str] = mapped_column(String(128))
    operation: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), index=True)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error_message: Mapped[str | None] = mapped_column(Text)
    # Which engine instance runs it and until when that claim holds (crash recovery).
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Grows with every claim; writes naming an older token are refused (fencing, engine/recorder.py).
    lease_token: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    runner: Mapped[str | None] = mapped_column(String(64))  # the replica that ran it (last claim)
    retry_of: Mapped[str | None] = mapped_column(String(36))
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # workflow-level timeout
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WorkflowStep(Base):
    __tablename__ = "workflow_steps"
    __table_args__ = (UniqueConstraint("execution_id", "position", name="uq_workflow_steps_exec_pos"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("workflow_executions.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    logs: Mapped[str] = mapped_column(Text, default="")
    outputs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error_message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Token(Base):
    """An API token: only its SHA-256 is stored; the token itself is shown once, at creation."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    team: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RateHit(Base):
    """Mutations of one token in one rate-limit window, counted by every replica (ratelimit.py)."""

    __tablename__ = "rate_hits"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
