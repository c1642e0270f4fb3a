"""What every resolver gets: the services of the running app and who the caller is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from innominatus.api.loaders import Loaders
from innominatus.auth import Principal
from innominatus.providers import Catalog
from innominatus.service import Services
from innominatus.store import Store

__all__ = ["Context", "Services"]


@dataclass
class Context:
    services: Services
    token: str | None = None
    principal: Principal | None = None
    connection_params: dict[str, Any] = field(default_factory=dict)  # websocket connection_init payload
    websocket: bool = False  # one context for the whole connection: its loaders keep nothing
    connection: WebSocket | None = None  # the websocket itself, to close it when its token goes
    _loaders: Loaders | None = None

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            self._loaders = Loaders(self.services.store, cache=not self.websocket)
        return self._loaders

    @property
    def store(self) -> Store:
        return self.services.store

    @property
    def catalog(self) -> Catalog:
        return self.services.catalog

    @property
    def caller(self) -> Principal:
        """The authenticated caller (the guard extension refuses operations without one)."""
        assert self.principal is not None
        return self.principal
