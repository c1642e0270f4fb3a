"""What every resolver gets: the services of the running app and the caller's credentials."""

from __future__ import annotations

from dataclasses import dataclass

from innominatus.providers import Catalog
from innominatus.store import Store


@dataclass
class Services:
    store: Store
    catalog: Catalog


@dataclass
class Context:
    services: Services
    token: str | None = None  # accepted as given until authentication lands

    @property
    def store(self) -> Store:
        return self.services.store

    @property
    def catalog(self) -> Catalog:
        return self.services.catalog
