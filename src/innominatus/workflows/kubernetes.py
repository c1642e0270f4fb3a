"""Step type `kubernetes`: talks to the Kubernetes API with the official client (no kubectl, no shell).

Operations (`config.operation`):

* `apply` — server-side apply (field manager `innominatus`, conflicts forced) of every document of the
  rendered `manifest` (a YAML multi-document string); namespaced or cluster-scoped, custom resources
  included (kinds are found by discovery). Outputs `objects`: `kind/namespace/name` (`kind/name` when
  cluster-scoped) of each applied object.
* `delete` — the objects of `manifest`, or the one named by `apiVersion`/`kind`/`name`/`namespace`; an
  object already gone is fine. With `wait: true`, waits (`timeout`, `interval`) until they are gone.
* `get` — one object; `fields: {output: path}` picks what becomes outputs (else `object`, the whole
  object). `missingOk: true` turns a 404 into `exists: false`. Secrets are refused: use `read-secret`.
* `wait` — polls `field` (a path like `status.PostgresClusterStatus`) until it `equals` a value, for at
  most `timeout` (default: the step's timeout); pauses start at 0.25 s and double up to `interval`.
* `read-secret` — a Secret's decoded keys become outputs (all of them, or `keys: {output: secretKey}`).
  Values are never logged: only key names are.

The cluster is the platform's (`admin-config.yaml` `kubernetes:`: `kubeconfig`, `inCluster`, `context`);
without that section the client's own loading applies ($KUBECONFIG, ~/.kube/config, else in-cluster).
The client is synchronous: each call runs in a worker thread, so the engine's event loop never blocks.
API errors become step errors naming the operation, kind, object and HTTP status, e.g.
``apply postgresql shop/shop-db: 403 Forbidden: ...``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from innominatus.workflows.definition import DefinitionError, Step, parse_duration
from innominatus.workflows.policy import StepResult
from innominatus.workflows.steps import LogLine, StepLog, require_str

if TYPE_CHECKING:
    from kubernetes.client import ApiClient
    from kubernetes.dynamic import DynamicClient

    from innominatus.admin_config import AdminConfig, KubernetesSettings

log = logging.getLogger(__name__)

FIELD_MANAGER = "innominatus"
REQUEST_TIMEOUT = 30.0  # seconds, for each API call
FIRST_POLL_PAUSE = 0.25
DEFAULT_INTERVAL = 2.0
_MESSAGE_LIMIT = 500

# operation → its config fields (besides `operation`); the templated ones are the string fields of
# _TEMPLATED that the step gives.
_FIELDS: dict[str, tuple[str, ...]] = {
    "apply": ("manifest", "namespace"),
    "delete": ("manifest", "apiVersion", "kind", "name", "namespace", "wait", "timeout", "interval"),
    "get": ("apiVersion", "kind", "name", "namespace", "fields", "missingOk"),
    "wait": ("apiVersion", "kind", "name", "namespace", "field", "equals", "timeout", "interval"),
    "read-secret": ("name", "namespace", "keys"),
}
OPERATIONS = tuple(_FIELDS)
_TEMPLATED = ("manifest", "namespace", "apiVersion", "kind", "name", "equals", "timeout", "interval")


class KubernetesStep:
    def template_fields(
        self, config: dict[str, Any], where: str, platform: AdminConfig
    ) -> list[tuple[str, bool]]:
        operation = require_str(config, "operation", where)
        if operation not in _FIELDS:
            raise DefinitionError(
                f"{where}.operation: must be one of {', '.join(OPERATIONS)}, got {operation!r}"
            )
        allowed = _FIELDS[operation]
        for key in config:
            if key != "operation" and key not in allowed:
                raise DefinitionError(
                    f"{where}.{key}: not a field of operation '{operation}' (its fields: {', '.join(allowed)})"
                )
        for key in ("manifest", "namespace", "apiVersion", "kind", "name"):
            require_str(config, key, where, required=False)
        if operation == "apply":
            require_str(config, "manifest", where)
            _check_static_manifest(config["manifest"], f"{where}.manifest")
        elif operation == "delete":
            if "manifest" in config:
                for key in ("apiVersion", "kind", "name", "namespace"):
                    if key in config:
                        raise DefinitionError(
                            f"{where}.{key}: give either manifest or apiVersion/kind/name, not both"
                        )
                _check_static_manifest(config["manifest"], f"{where}.manifest")
            else:
                for key in ("apiVersion", "kind", "name"):
                    require_str(config, key, where)
            _check_bool(config, "wait", where)
        elif operation in ("get", "wait"):
            for key in ("apiVersion", "kind", "name"):
                require_str(config, key, where)
            if operation == "get":
                if config["kind"] == "Secret":
                    raise DefinitionError(f"{where}.kind: use operation 'read-secret' to read a Secret")
                _check_mapping(config, "fields", where, paths=True)
                _check_bool(config, "missingOk", where)
            else:
                path = require_str(config, "field", where)
                _check_path(str(path), f"{where}.field")
                equals = config.get("equals")
                if equals is None:
                    raise DefinitionError(f"{where}.equals: is required")
                if not isinstance(equals, str | int | float | bool):
                    raise DefinitionError(f"{where}.equals: must be a string, number or boolean")
        else:  # read-secret
            require_str(config, "name", where)
            require_str(config, "namespace", where)
            _check_mapping(config, "keys", where, paths=False)
        for key in ("timeout", "interval"):
            value = config.get(key)
            if value is None or (isinstance(value, str) and ("{{" in value or "{%" in value)):
                continue
            parse_duration(value, f"{where}.{key}")  # a literal: checked now
        return [(key, False) for key in _TEMPLATED if isinstance(config.get(key), str)]

    async def run(
        self, step: Step, context: Mapping[str, Any], on_log_line: LogLine | None, platform: AdminConfig
    ) -> StepResult:
        steplog = StepLog(on_log_line)
        say = steplog.say

        values = {key: template.render(context) for key, template in step.templates.items()}
        config = {**step.config, **values}
        operation = config["operation"]
        session = _Session(step, config, say)
        api = None
        try:
            api = await _call(_api_client, platform.kubernetes)
            session.client = await _call(_dynamic_client, api)
            outputs = await getattr(session, operation.replace("-", "_"))()
        except _Failed as exc:
            return StepResult(False, steplog.text, {}, str(exc))
        except Exception as exc:  # the client raises many kinds; none may escape as a traceback
            host = api.configuration.host if api is not None else "?"
            return StepResult(False, steplog.text, {}, f"{operation}: {_unexpected(exc, host)}")
        finally:
            if api is not None:
                api.close()
        return StepResult(True, steplog.text, outputs, None)


# --------------------------------------------------------------------------------------------------
# Load-time checks.


def _check_bool(config: dict[str, Any], key: str, where: str) -> None:
    if key in config and not isinstance(config[key], bool):
        raise DefinitionError(f"{where}.{key}: must be true or false")


def _check_mapping(config: dict[str, Any], key: str, where: str, *, paths: bool) -> None:
    value = config.get(key)
    if value is None:
        return
    if not isinstance(value, dict) or not value:
        raise DefinitionError(
            f"{where}.{key}: must be a mapping of output name to {'field path' if paths else 'secret key'}"
        )
    for name, source in value.items():
        if not isinstance(source, str) or not source:
            raise DefinitionError(f"{where}.{key}.{name}: must be a non-empty string")
        if paths:
            _check_path(source, f"{where}.{key}.{name}")


def _check_path(path: str, where: str) -> None:
    if not path or any(not part for part in path.split(".")):
        raise DefinitionError(f"{where}: must be a dotted field path like status.phase, got {path!r}")


def _check_static_manifest(text: str, where: str) -> None:
    if "{{" in text or "{%" in text:
        return  # checked once rendered
    try:
        _documents(text)
    except _Failed as exc:
        raise DefinitionError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------------------------------
# Running.


class _Failed(Exception):
    """A step error, already worded for the user."""


@dataclass(frozen=True)
class _Ref:
    api_version: str
    kind: str
    name: str
    namespace: str | None

    def where(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def label(self) -> str:
        return f"{self.kind} {self.where()}"

    def output(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


T = TypeVar("T")


async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


def _api_client(settings: KubernetesSettings) -> ApiClient:
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        if settings.in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        elif settings.kubeconfig is not None:
            config.load_kube_config(
                config_file=str(settings.kubeconfig),
                context=settings.context,
                client_configuration=configuration,
                persist_config=False,
            )
        else:
            try:  # $KUBECONFIG (read now, not when the client was imported), else ~/.kube/config
                config.load_kube_config(
                    config_file=os.environ.get("KUBECONFIG") or "~/.kube/config",
                    context=settings.context,
                    client_configuration=configuration,
                    persist_config=False,
                )
            except (ConfigException, FileNotFoundError):
                if not os.environ.get("KUBERNETES_SERVICE_HOST"):
                    raise
                config.load_incluster_config(client_configuration=configuration)
    except (ConfigException, FileNotFoundError, OSError, yaml.YAMLError) as exc:
        source = (
            "in-cluster config"
            if settings.in_cluster
            else f"kubeconfig {settings.kubeconfig}"
            if settings.kubeconfig
            else "the default kubeconfig ($KUBECONFIG or ~/.kube/config)"
        )
        raise _Failed(f"cannot load Kubernetes settings from {source}: {exc}") from None
    return client.ApiClient(configuration=configuration)


def _dynamic_client(api: ApiClient) -> DynamicClient:
    """The dynamic client; making one reads the server's version and API groups (discovery)."""
    from kubernetes.dynamic import DynamicClient

    return DynamicClient(api)


class _Session:
    """One run of one step: the rendered config, the client, the log."""

    def __init__(self, step: Step, config: dict[str, Any], say: Callable[[str], Any]) -> None:
        self.step = step
        self.config = config
        self.say = say
        self.operation: str = config["operation"]
        self.client: DynamicClient | None = None

    # --- operations ----------------------------------------------------------------------------------

    async def apply(self) -> dict[str, Any]:
        documents = _documents(self.config["manifest"])
        applied: list[str] = []
        for doc in documents:
            resource = await self._resource(doc["apiVersion"], doc["kind"], doc["metadata"]["name"], None)
            namespace = None
            if resource.namespaced:
                namespace = doc["metadata"].get("namespace") or self.config.get("namespace") or None
                if not namespace:
                    raise _Failed(
                        f"apply {doc['kind']} {doc['metadata']['name']}: a namespaced kind needs "
                        "metadata.namespace (or the step's namespace)"
                    )
                doc["metadata"]["namespace"] = namespace
            ref = _Ref(doc["apiVersion"], doc["kind"], doc["metadata"]["name"], namespace)
            result = await self._api(
                ref,
                resource.server_side_apply,
                body=doc,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )
            meta = _as_dict(result).get("metadata") or {}
            generation = f" (generation {meta['generation']})" if meta.get("generation") else ""
            await self.say(f"applied {ref.label()}{generation}")
            applied.append(ref.output())
        return {"objects": applied}

    async def delete(self) -> dict[str, Any]:
        if "manifest" in self.config:
            refs = [
                _Ref(d["apiVersion"], d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"))
                for d in reversed(_documents(self.config["manifest"]))
            ]
        else:
            refs = [self._ref()]
        pending: list[tuple[_Ref, Any]] = []
        for ref in refs:
            resource = await self._resource(ref.api_version, ref.kind, ref.name, ref.namespace)
            ref = self._scoped(ref, resource)
            try:
                await self._api(ref, resource.delete, name=ref.name, namespace=ref.namespace)
            except _NotFound:
                await self.say(f"{ref.label()} is already gone")
                continue
            await self.say(f"deleting {ref.label()}")
            pending.append((ref, resource))
        if self.config.get("wait") and pending:
            timeout = self._duration("timeout", self.step.timeout)
            for ref, resource in pending:
                await self._poll(ref, resource, timeout, lambda obj: obj is None, "to be gone")
                await self.say(f"{ref.label()} is gone")
        return {"deleted": [ref.output() for ref in refs]}

    async def get(self) -> dict[str, Any]:
        ref = self._ref()
        if ref.kind == "Secret":
            raise _Failed(f"get {ref.label()}: use operation 'read-secret' to read a Secret")
        resource = await self._resource(ref.api_version, ref.kind, ref.name, ref.namespace)
        ref = self._scoped(ref, resource)
        fields: dict[str, str] = self.config.get("fields") or {}
        try:
            obj = _as_dict(await self._api(ref, resource.get, name=ref.name, namespace=ref.namespace))
        except _NotFound as exc:
            if not self.config.get("missingOk"):
                raise _Failed(str(exc.failure)) from None
            await self.say(f"{ref.label()} does not exist")
            return {"exists": False, **dict.fromkeys(fields)}
        await self.say(f"read {ref.label()}")
        if not fields:
            obj.get("metadata", {}).pop("managedFields", None)
            return {"exists": True, "object": obj}
        return {"exists": True, **{name: _lookup(obj, path)[1] for name, path in fields.items()}}

    async def wait(self) -> dict[str, Any]:
        ref = self._ref()
        resource = await self._resource(ref.api_version, ref.kind, ref.name, ref.namespace)
        ref = self._scoped(ref, resource)
        path: str = self.step.config["field"]
        want = _scalar_text(self.config["equals"])
        timeout = self._duration("timeout", self.step.timeout)
        await self.say(f"waiting up to {timeout:g}s for {ref.label()} {path} = {want}")
        obj = await self._poll(
            ref,
            resource,
            timeout,
            lambda obj: obj is not None and _field_text(obj, path) == want,
            f"{path} = {want}",
            path=path,
        )
        await self.say(f"{ref.label()} {path} is {want}")
        return {"value": _lookup(obj, path)[1]}

    async def read_secret(self) -> dict[str, Any]:
        ref = _Ref("v1", "Secret", self.config["name"], self.config["namespace"])
        resource = await self._resource("v1", "Secret", ref.name, ref.namespace)
        try:
            obj = _as_dict(await self._api(ref, resource.get, name=ref.name, namespace=ref.namespace))
        except _NotFound as exc:
            raise _Failed(str(exc.failure)) from None
        data: dict[str, str] = obj.get("data") or {}
        mapping: dict[str, str] = self.step.config.get("keys") or {key: key for key in sorted(data)}
        outputs: dict[str, str] = {}
        for output, key in mapping.items():
            if key not in data:
                known = ", ".join(sorted(data)) or "none"
                raise _Failed(f"read-secret {ref.label()}: key {key!r} not found (keys: {known})")
            try:
                outputs[output] = base64.b64decode(data[key], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise _Failed(
                    f"read-secret {ref.label()}: key {key!r} is not base64-encoded UTF-8 text"
                ) from None
        await self.say(f"read {ref.label()}: keys {', '.join(sorted(mapping.values())) or 'none'}")
        return outputs

    # --- helpers -------------------------------------------------------------------------------------

    def _ref(self) -> _Ref:
        c = self.config
        return _Ref(c["apiVersion"], c["kind"], c["name"], c.get("namespace") or None)

    def _scoped(self, ref: _Ref, resource: Any) -> _Ref:
        if resource.namespaced and not ref.namespace:
            raise _Failed(f"{self.operation} {ref.label()}: {ref.kind} is namespaced: namespace is required")
        if not resource.namespaced and ref.namespace:
            return _Ref(ref.api_version, ref.kind, ref.name, None)
        return ref

    def _duration(self, key: str, default: float) -> float:
        value = self.config.get(key)
        if value is None or value == "":
            return default
        try:
            return parse_duration(value, key)
        except DefinitionError as exc:
            raise _Failed(f"{self.operation}: {exc}") from None

    async def _resource(self, api_version: str, kind: str, name: str, namespace: str | None) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError, ResourceNotUniqueError

        assert self.client is not None
        label = _Ref(api_version, kind, name, namespace).label()
        try:
            return await _call(self.client.resources.get, api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            raise _Failed(
                f"{self.operation} {label}: the API server has no kind {kind} in {api_version} "
                "(is its CustomResourceDefinition installed?)"
            ) from None
        except ResourceNotUniqueError:
            raise _Failed(f"{self.operation} {label}: kind {kind} in {api_version} is ambiguous") from None

    async def _api(self, ref: _Ref, method: Callable[..., Any], **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return await _call(method, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as exc:
            failure = _Failed(f"{self.operation} {ref.label()}: {_describe(exc)}")
            if exc.status == HTTPStatus.NOT_FOUND:
                raise _NotFound(failure) from None
            raise failure from None

    async def _poll(
        self,
        ref: _Ref,
        resource: Any,
        seconds: float,
        done: Callable[[dict[str, Any] | None], bool],
        goal: str,
        *,
        path: str | None = None,
    ) -> Any:
        deadline = time.monotonic() + seconds
        pause = FIRST_POLL_PAUSE
        interval = self._duration("interval", DEFAULT_INTERVAL)
        last_seen: object = object()
        while True:
            try:
                obj = _as_dict(await self._api(ref, resource.get, name=ref.name, namespace=ref.namespace))
            except _NotFound:
                obj = None
            if done(obj):
                return obj
            seen = "absent" if obj is None else (_field_text(obj, path) if path else "present")
            if path is not None and seen != last_seen:
                shown = "not set" if seen is None else seen
                await self.say(f"{ref.label()} {path}: {shown}")
                last_seen = seen
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if obj is None:
                    now = "does not exist"
                elif path:
                    now = "is not set" if seen is None else f"is {seen!r}"
                else:
                    now = "still exists"
                what = f"{path} {now}" if path and obj is not None else f"{ref.kind} {now}"
                raise _Failed(
                    f"{self.operation} {ref.label()}: timed out after {seconds:g}s waiting for {goal}: {what}"
                )
            await asyncio.sleep(min(pause, interval, remaining))
            pause *= 2


class _NotFound(_Failed):
    """A 404; where a missing object is fine, the caller catches it, else it fails the step as is."""

    def __init__(self, failure: _Failed) -> None:
        super().__init__(str(failure))
        self.failure = failure


def _documents(text: str) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise _Failed(f"manifest is not valid YAML: {exc}") from None
    if not docs:
        raise _Failed("manifest holds no object")
    for i, doc in enumerate(docs, 1):
        at = f"manifest document {i}"
        if not isinstance(doc, dict):
            raise _Failed(f"{at}: must be a mapping")
        for key in ("apiVersion", "kind"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise _Failed(f"{at}: {key} is required")
        meta = doc.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
            raise _Failed(f"{at} ({doc['kind']}): metadata.name is required")
        if meta.get("namespace") is not None and not isinstance(meta["namespace"], str):
            raise _Failed(f"{at} ({doc['kind']}): metadata.namespace must be a string")
    return docs


def _as_dict(result: Any) -> dict[str, Any]:
    if hasattr(result, "to_dict"):
        return result.to_dict()
    if isinstance(result, dict):
        return result
    return {}


def _lookup(obj: Any, path: str) -> tuple[bool, Any]:
    """(found, value) at a dotted path; a segment of digits indexes a list."""
    current = obj
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return False, None
    return True, current


def _field_text(obj: Any, path: str) -> str | None:
    found, value = _lookup(obj, path)
    return _scalar_text(value) if found and value is not None else None


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _describe(exc: Any) -> str:
    """`403 Forbidden: <the API server's message>`."""
    status = getattr(exc, "status", None) or 0
    reason = getattr(exc, "reason", None)
    if not reason:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "error"
    message = ""
    body = getattr(exc, "body", None)
    if body:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        try:
            parsed = json.loads(text)
            message = str(parsed.get("message") or "") if isinstance(parsed, dict) else ""
        except ValueError:
            message = text.strip()
    if len(message) > _MESSAGE_LIMIT:
        message = message[:_MESSAGE_LIMIT] + "…"
    head = f"{status} {reason}" if status else str(reason)
    return f"{head}: {message}" if message else head


def _unexpected(exc: Exception, host: str) -> str:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(exc, ApiException):  # discovery
        return f"Kubernetes API at {host}: {_describe(exc)}"
    if isinstance(exc, HTTPError | OSError):
        reason = getattr(exc, "reason", None) or exc
        return f"cannot reach the Kubernetes API at {host}: {reason}"
    log.warning("kubernetes step: unexpected error", exc_info=True)
    return f"Kubernetes API at {host}: {type(exc).__name__}: {exc}"
