"""The orchestration engine: claims work through the database and runs workflows concurrently.

- `scheduler`: when to claim, how many at once, leases and cancellation (the `Engine`);
- `claims`: one transaction takes a bounded batch of work and records each run's start;
- `run`: running one claimed workflow;
- `recorder`: storing step attempts and the run's end.
"""

from innominatus.engine.claims import Claim
from innominatus.engine.scheduler import Engine

__all__ = ["Claim", "Engine"]
