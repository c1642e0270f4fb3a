"""A stand-in for a Kubernetes API server — NOT a cluster — for the `kubernetes` step type's tests.

It is a small threaded HTTP server on 127.0.0.1 (plain http, no authentication) that answers exactly
the REST calls the official client's `DynamicClient` makes for our workflows:

* discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/acid.zalan.do/v1`;
* server-side apply: `PATCH` with `Content-Type: application/apply-patch+yaml` (YAML or JSON body,
  `fieldManager` required) creating or updating an object; with one field manager, an apply replaces
  what that manager set before (so `spec` and labels are the applied ones) and keeps `status` and the
  server's metadata, as the real server does;
* `GET` of one object (or a list), `DELETE` of one object;
* a namespaced object is refused (404) while its namespace does not exist, as on a real server.

Kinds served: Namespace, Secret (v1) and Zalando's `postgresql` (acid.zalan.do/v1).

It also plays the postgres-operator, in a simplified way: `operator_delay` seconds after a
`postgresql` is applied it creates the credentials secret of each user
(`<user with _ as ->.<cluster>.credentials.postgresql.acid.zalan.do`, base64 `username`/`password`) and
sets `status.PostgresClusterStatus: Running`. An apply over an existing cluster marks it `Updating`
at once (a real operator takes a moment to notice). A deleted `postgresql` lingers `delete_delay`
seconds (as if it had a finalizer), then goes with its secrets. No pod, service or database exists.

Failures on demand: `forbidden_namespaces` (any call on an object in one of them → 403, as RBAC would
answer), and `fail(status, method=..., plural=..., name=...)` rules (403/404/409/500...).
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import string
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

ZALANDO_GROUP = "acid.zalan.do"
SECRET_SUFFIX = "credentials.postgresql.acid.zalan.do"


@dataclass(frozen=True)
class Kind:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS = (
    Kind("", "v1", "Namespace", "namespaces", "namespace", False, ("ns",)),
    Kind("", "v1", "Secret", "secrets", "secret", True),
    Kind(ZALANDO_GROUP, "v1", "postgresql", "postgresqls", "postgresql", True, ("pg",)),
)
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass
class Rule:
    status: int
    method: str | None = None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    message: str | None = None

    def matches(self, method: str, kind: Kind, namespace: str | None, name: str | None) -> bool:
        return (
            (self.method is None or self.method == method)
            and (self.plural is None or self.plural == kind.plural)
            and (self.namespace is None or self.namespace == namespace)
            and (self.name is None or self.name == name)
        )


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None


@dataclass
class StandIn:
    """The stand-in API server. Use as a context manager; `url` is where it listens."""

    operator_delay: float = 0.5
    delete_delay: float = 0.3
    forbidden_namespaces: set[str] = field(default_factory=set)
    passwords: dict[str, str] = field(default_factory=dict)  # user → the password its secret gets
    rules: list[Rule] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    # (plural, namespace or "", name) → object
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self._timers: list[threading.Timer] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._resource_version = 0

    # --- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> StandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        standin = self

        class Handler(_Handler):
            server_state = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="k8s-standin", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self.lock:
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig whose current context points at this stand-in (plain http, no credentials)."""
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
                    "users": [{"name": "standin", "user": {}}],
                    "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin"}}],
                    "current-context": "standin",
                }
            )
        )
        return path

    # --- what tests look at and set up ---------------------------------------------------------------

    def get(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects.get((plural, namespace or "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def names(self, plural: str) -> list[str]:
        with self.lock:
            return sorted(f"{ns}/{name}" if ns else name for p, ns, name in self.objects if p == plural)

    def fail(
        self,
        status: int,
        *,
        method: str | None = None,
        plural: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        message: str | None = None,
    ) -> Rule:
        rule = Rule(status, method, plural, namespace, name, message)
        with self.lock:
            self.rules.append(rule)
        return rule

    def put(self, kind_name: str, obj: dict[str, Any]) -> None:
        """Store an object as is (e.g. a secret made by someone else)."""
        kind = next(k for k in KINDS if k.kind == kind_name)
        meta = obj.setdefault("metadata", {})
        with self.lock:
            self._stamp(obj)
            self.objects[
                (kind.plural, meta.get("namespace", "") if kind.namespaced else "", meta["name"])
            ] = obj

    # --- internals -------------------------------------------------------------------------------------

    def _stamp(self, obj: dict[str, Any]) -> None:
        self._resource_version += 1
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta["resourceVersion"] = str(self._resource_version)

    def _later(self, delay: float, action: Any) -> None:
        timer = threading.Timer(delay, action)
        timer.daemon = True
        with self.lock:
            self._timers.append(timer)
        timer.start()

    def _apply(self, kind: Kind, namespace: str | None, name: str, body: dict[str, Any], manager: str) -> int:
        key = (kind.plural, namespace or "", name)
        with self.lock:
            old = self.objects.get(key)
            new = copy.deepcopy(body)
            new.pop("status", None)  # the status subresource is not applied through the main resource
            meta = new.setdefault("metadata", {})
            meta["name"] = name
            if namespace:
                meta["namespace"] = namespace
            if old is not None:
                for kept in ("uid", "creationTimestamp", "generation"):
                    if kept in old["metadata"]:
                        meta[kept] = old["metadata"][kept]
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                if new.get("spec") != old.get("spec"):
                    meta["generation"] = old["metadata"].get("generation", 1) + 1
            else:
                meta["generation"] = 1
                if kind.kind == "Namespace":
                    new["status"] = {"phase": "Active"}
            meta["managedFields"] = [
                {"manager": manager, "operation": "Apply", "apiVersion": kind.api_version, "time": _now()}
            ]
            self._stamp(new)
            self.objects[key] = new
            if kind.plural == "postgresqls":
                if old is not None and new.get("spec") != old.get("spec"):
                    new.setdefault("status", {})["PostgresClusterStatus"] = "Updating"
                self._later(self.operator_delay, lambda: self._operate(namespace or "", name))
            return HTTPStatus.OK if old is not None else HTTPStatus.CREATED

    def _operate(self, namespace: str, cluster: str) -> None:
        """The operator's reaction to a postgresql: credentials secrets, then Running."""
        with self.lock:
            pg = self.objects.get(("postgresqls", namespace, cluster))
            if pg is None or pg["metadata"].get("deletionTimestamp"):
                return
            users = [*((pg.get("spec") or {}).get("users") or {}), "postgres", "standby"]
            for user in users:
                secret_name = f"{user.replace('_', '-')}.{cluster}.{SECRET_SUFFIX}"
                if ("secrets", namespace, secret_name) in self.objects:
                    continue
                password = self.passwords.get(user) or "".join(
                    secrets.choice(string.ascii_letters + string.digits) for _ in range(64)
                )
                secret = {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "Opaque",
                    "metadata": {
                        "name": secret_name,
                        "namespace": namespace,
                        "labels": {"application": "spilo", "cluster-name": cluster, "team": _team(pg)},
                    },
                    "data": {"username": _b64(user), "password": _b64(password)},
                }
                self._stamp(secret)
                self.objects[("secrets", namespace, secret_name)] = secret
            pg.setdefault("status", {})["PostgresClusterStatus"] = "Running"
            self._stamp(pg)

    def _delete(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (kind.plural, namespace or "", name)
        with self.lock:
            obj = self.objects.get(key)
            if obj is None:
                return None
            if kind.plural != "postgresqls":
                del self.objects[key]
                if kind.kind == "Namespace":
                    for other in [k for k in self.objects if k[1] == name]:
                        del self.objects[other]
                return copy.deepcopy(obj)
            obj["metadata"].setdefault("deletionTimestamp", _now())
            self._stamp(obj)

            def gone() -> None:
                with self.lock:
                    self.objects.pop(key, None)
                    for other in [
                        k
                        for k, v in self.objects.items()
                        if k[0] == "secrets"
                        and k[1] == (namespace or "")
                        and (v["metadata"].get("labels") or {}).get("cluster-name") == name
                    ]:
                        del self.objects[other]

            self._later(self.delete_delay, gone)
            return copy.deepcopy(obj)


def _team(pg: dict[str, Any]) -> str:
    return str((pg.get("spec") or {}).get("teamId", ""))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Error(Exception):
    def __init__(self, code: int, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


_REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
}


class _Handler(BaseHTTPRequestHandler):
    server_state: StandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    # --- plumbing ------------------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        state = self.server_state
        with state.lock:
            state.requests.append(Request(method, parts.path, query, self.headers.get("Content-Type")))
        try:
            code, payload = self._route(method, parts.path.rstrip("/"), query, body)
        except _Error as err:
            code = err.code
            payload = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": err.message,
                "reason": _REASONS.get(err.code, "Unknown"),
                "details": err.details,
                "code": err.code,
            }
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        if method == "GET":
            discovery = _discovery(path)
            if discovery is not None:
                return 200, discovery
        segments = [s for s in path.split("/") if s]
        if segments[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", segments[2:]
        elif segments[:1] == ["apis"] and len(segments) >= 3:
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            raise _Error(404, f"the server could not find the requested resource ({method} {path})")
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 2:
            raise _Error(404, f"the server could not find the requested resource ({method} {path})")
        plural, name = rest[0], (rest[1] if len(rest) == 2 else None)
        kind = next((k for k in KINDS if (k.group, k.version, k.plural) == (group, version, plural)), None)
        if kind is None or kind.namespaced != (namespace is not None):
            raise _Error(404, f"the server could not find the requested resource ({method} {path})")
        self._check_rules(method, kind, namespace, name)
        if method == "GET":
            return 200, self._get(kind, namespace, name)
        if name is None:
            raise _Error(405, f"{method} on a collection is not supported by this stand-in")
        if method == "PATCH":
            return self._patch(kind, namespace, name, query, body)
        if method == "DELETE":
            obj = self.server_state._delete(kind, namespace, name)
            if obj is None:
                raise self._not_found(kind, name)
            return 200, obj
        raise _Error(405, f"{method} is not supported by this stand-in (use server-side apply)")

    def _check_rules(self, method: str, kind: Kind, namespace: str | None, name: str | None) -> None:
        state = self.server_state
        scope = namespace if kind.namespaced else None
        verb = {"GET": "get" if name else "list", "PATCH": "patch", "DELETE": "delete"}.get(method, method)
        if scope is not None and scope in state.forbidden_namespaces:
            group = kind.group or ""
            raise _Error(
                403,
                f'{kind.plural}{"." + group if group else ""} "{name or ""}" is forbidden: User '
                f'"system:serviceaccount:innominatus:innominatus" cannot {verb} resource "{kind.plural}" '
                f'in API group "{group}" in the namespace "{scope}"',
                {"name": name or "", "group": group, "kind": kind.plural},
            )
        with state.lock:
            rules = list(state.rules)
        for rule in rules:
            if rule.matches(method, kind, namespace, name):
                raise _Error(
                    rule.status,
                    rule.message or f'{kind.plural} "{name or ""}": injected {rule.status} from the stand-in',
                    {"name": name or "", "group": kind.group, "kind": kind.plural},
                )

    def _not_found(self, kind: Kind, name: str) -> _Error:
        qualified = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
        return _Error(
            404, f'{qualified} "{name}" not found', {"name": name, "group": kind.group, "kind": kind.plural}
        )

    def _get(self, kind: Kind, namespace: str | None, name: str | None) -> dict[str, Any]:
        state = self.server_state
        with state.lock:
            if name is not None:
                obj = state.objects.get((kind.plural, namespace or "", name))
                if obj is None:
                    raise self._not_found(kind, name)
                return copy.deepcopy(obj)
            items = [
                copy.deepcopy(v)
                for (p, ns, _), v in sorted(state.objects.items())
                if p == kind.plural and (namespace is None or ns == namespace)
            ]
        return {"apiVersion": kind.api_version, "kind": f"{kind.kind}List", "metadata": {}, "items": items}

    def _patch(
        self, kind: Kind, namespace: str | None, name: str, query: dict[str, list[str]], raw: bytes
    ) -> tuple[int, dict[str, Any]]:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type != "application/apply-patch+yaml":
            raise _Error(
                415,
                f"the body of the request was in an unknown format - accepted media types include: "
                f"application/apply-patch+yaml (this stand-in only does server-side apply, got {content_type!r})",
            )
        manager = (query.get("fieldManager") or [""])[0]
        if not manager:
            raise _Error(400, "PATCH /apply requires fieldManager to be set")
        try:
            body = yaml.safe_load(raw.decode())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise _Error(400, f"error decoding YAML: {exc}") from None
        if not isinstance(body, dict):
            raise _Error(400, "the apply body must be an object")
        meta = body.get("metadata") or {}
        if body.get("apiVersion") != kind.api_version or body.get("kind") != kind.kind:
            raise _Error(
                400,
                f"the body's apiVersion/kind {body.get('apiVersion')}/{body.get('kind')} does not match "
                f"the URL's {kind.api_version}/{kind.kind}",
            )
        if meta.get("name") not in (None, name):
            raise _Error(400, "the name of the object does not match the name on the URL")
        if kind.namespaced and meta.get("namespace") not in (None, namespace):
            raise _Error(400, "the namespace of the provided object does not match the namespace on the URL")
        state = self.server_state
        if kind.namespaced:
            with state.lock:
                ns = state.objects.get(("namespaces", "", namespace or ""))
            if ns is None:
                raise _Error(
                    404, f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
                )
        code = state._apply(kind, namespace, name, body, manager)
        return code, state.get(kind.plural, name, namespace) or {}


def _discovery(path: str) -> dict[str, Any] | None:
    if path == "/version":
        return {
            "major": "1",
            "minor": "30",
            "gitVersion": "v1.30.0-standin",
            "platform": "linux/amd64",
            "goVersion": "go1.22",
        }
    if path == "/api":
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        }
    if path == "/apis":
        groups = sorted({k.group for k in KINDS if k.group})
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                    "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"},
                }
                for g in groups
            ],
        }
    segments = [s for s in path.split("/") if s]
    if segments == ["api", "v1"]:
        group_version = "v1"
    elif len(segments) == 3 and segments[0] == "apis":
        group_version = f"{segments[1]}/{segments[2]}"
    else:
        return None
    kinds = [k for k in KINDS if k.api_version == group_version]
    if not kinds:
        return None
    resources: list[dict[str, Any]] = []
    for k in kinds:
        resources.append(
            {
                "name": k.plural,
                "singularName": k.singular,
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": VERBS,
                "shortNames": list(k.short_names),
            }
        )
        if k.plural in ("namespaces", "postgresqls"):
            resources.append(
                {
                    "name": f"{k.plural}/status",
                    "singularName": "",
                    "namespaced": k.namespaced,
                    "kind": k.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll `predicate` (for tests that look at the stand-in directly)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
