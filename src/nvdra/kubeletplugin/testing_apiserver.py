"""``ApiServer``: an in-process HTTP Kubernetes API server over a ``FakeKube`` (tests, demos, benchmarks).

It serves discovery (``/version``, ``/api``, ``/apis``, ``/apis/resource.k8s.io``) and the REST paths
of every registered kind (built-ins, ``resource.k8s.io`` at each served version, CRDs installed with
:meth:`ApiServer.install_crd`): get, list, watch, create, update, patch, delete, the ``status``
subresource, with Kubernetes-shaped ``Status`` error bodies. The write rules are the store's (see
:mod:`nvdra.kubeletplugin.store.objectstore`); the HTTP transport is :mod:`.testing_http`, what a
request names and carries :mod:`.testing_requests`; over HTTP also:
- objects are stored in the v1 shape (by the ``FakeKube``) and converted to and from the version named
  in the request path; a version the store does not serve is a 404, a body of another version a 400,
  and so is a body with fields the path's version does not have (``basic`` outside v1beta1, ``exactly``
  in v1beta1: a strict decoder's "unknown field"). This holds for every ``resource.k8s.io`` resource,
  the generic ones (ResourceClaimTemplates, DeviceClasses) included;
- query strings are parsed: ``labelSelector``, ``fieldSelector``, ``resourceVersion``, ``watch``
  (``1``/``true``: chunked JSON-line events, ``timeoutSeconds``, ``allowWatchBookmarks``, a 410
  ``Expired`` ERROR event for a compacted version), ``fieldValidation`` (``Strict``: unknown fields are
  a 400; ``Warn``, the default: ``Warning`` headers; unknown fields are dropped either way),
  ``dryRun=All``; ``timeout``, ``fieldManager``, ``limit``/``continue`` are accepted and ignored (a list
  may be answered whole);
- PATCH by Content-Type: merge, JSON (RFC 6902) and strategic merge (built-ins only) patches; 415 for
  anything else (server-side apply is not served);
- the opaque ``parameters`` of claims, templates and classes keep the bytes the request carried, so
  immutability compares them as the apiserver does;
- ``/version`` names the store's ``kubernetes_version``;
- a GET of objects (list, one object, or a watch) whose ``Accept`` asks first for a ``meta.k8s.io``
  ``Table`` (as ``kubectl get`` does) is answered with one, in the columns of the apiserver's printers
  (:mod:`.testing_tables`; CRDs by their ``additionalPrinterColumns``), ``includeObject`` honoured;
- the handler speaks HTTP/1.1 keep-alive with ``Content-Length`` and has Nagle's algorithm off: headers
  and body leave in two writes, and with Nagle plus delayed ACKs every answer would stall ~40 ms;
- authentication: the ``token`` is an administrator's (no RBAC check); :meth:`ApiServer.add_user` and
  :meth:`ApiServer.add_service_account` add users, authorized by ``rbac`` (403 with the apiserver's
  message) and recorded in :meth:`ApiServer.audit`; any other or no token is a 401 once one is set;
- ``admission``, when given, sees every write made over HTTP (validating admission);
- with ``rbac``, a ResourceClaim ``/status`` write also needs what 1.36's status strategy checks:
  ``resourceclaims/binding`` to change the allocation or reservedFor, and
  ``associated-node:<verb>`` (or ``arbitrary-node:<verb>``) on ``resourceclaims/driver`` named after
  each driver whose ``status.devices`` entries change (a 422; :mod:`.testing_claimstatus`);
- closing the server ends open watches and closes its open keep-alive connections.
"""

from __future__ import annotations

__all__ = ["BUILTIN_TYPES", "AdmissionRequest", "ApiServer"]

import functools
import json
import json.decoder
import json.scanner
import re
import secrets
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self
from urllib.parse import unquote

from nvdra.core.closing import Closing
from nvdra.core.errors import KubeApiError, KubeNotFound
from nvdra.kubeletplugin._kube import (
    RESOURCE_GROUP,
    SUPPORTED_VERSIONS,
    claim_to_version,
    resource_from_version,
    resource_to_version,
    shape_problems,
    slice_from_version,
    slice_to_version,
)
from nvdra.kubeletplugin.fake import FakeKube
from nvdra.kubeletplugin.objects import (
    BUILTIN_TYPES,
    PATCH_CONTENT_TYPES,
    RESOURCE_CLAIMS,
    RESOURCE_SLICES,
    ResourceType,
    WatchStream,
)
from nvdra.kubeletplugin.store.rules import raw_extensions
from nvdra.kubeletplugin.store.schema import drop_field
from nvdra.kubeletplugin.testing_claimstatus import NODE_NAME_EXTRA, claim_status_denial
from nvdra.kubeletplugin.testing_http import Answer, Handler, Server, WatchAnswer
from nvdra.kubeletplugin.testing_rbac import Attributes, Rbac, forbidden_message, service_account_user
from nvdra.kubeletplugin.testing_requests import (
    OBJECT_PATH,
    AdmissionRequest,
    builtin_unknown_fields,
    decode_with_spans,
    request_attributes,
    without_directives,
)
from nvdra.kubeletplugin.testing_tables import table_version, to_table
from nvdra.kubeletplugin.types import JsonObject

_GROUP_PREFIX = f"/apis/{RESOURCE_GROUP}/"
_SLICES = re.compile(r"^/apis/resource\.k8s\.io/(?P<v>[^/]+)/resourceslices(?:/(?P<name>[^/]+))?$")
_CLAIM = re.compile(
    r"^/apis/resource\.k8s\.io/(?P<v>[^/]+)/namespaces/(?P<ns>[^/]+)/resourceclaims/(?P<name>[^/]+)$"
)
_ADMIN = "system:admin"
_PATCH_TYPES = {content_type: patch_type for patch_type, content_type in PATCH_CONTENT_TYPES.items()}
_RAW_KINDS = re.compile(r"/(resourceclaims|resourceclaimtemplates|deviceclasses)(/|$)")
_FIELD_VALIDATION = ("Strict", "Warn", "Ignore")


class ApiServer(Closing):
    """An HTTP Kubernetes API server on 127.0.0.1 backed by a :class:`FakeKube` (context manager).

    Example::

        with ApiServer(FakeKube(served_versions=("v1beta1",))) as server:
            server.write_kubeconfig(tmp_path / "kubeconfig")
    """

    def __init__(
        self,
        store: FakeKube | None = None,
        *,
        token: str | None = None,
        port: int = 0,
        rbac: Rbac | None = None,
        admission: Callable[[AdmissionRequest], None] | None = None,
    ) -> None:
        """Bind (not yet serve) on 127.0.0.1.

        Args:
            store: the objects to serve (a new empty ``FakeKube`` by default).
            token: when set, the bearer token of an administrator (``system:masters``: no RBAC check).
            port: the TCP port; 0 picks a free one.
            rbac: when set, requests of the users :meth:`add_user` made are authorized by it (403 if not).
            admission: validating admission of every write made over HTTP (it raises a
                :class:`KubeApiError` to refuse one), after authorization and the kind's own validation.
        """
        self.store = store if store is not None else FakeKube()
        self._token = token
        self.rbac = rbac
        self._users: dict[str, str] = {}  # bearer token -> user name
        self._extras: dict[str, dict[str, list[str]]] = {}  # bearer token -> the user's extra info
        self._admission = admission
        self._audit: list[Attributes] = []
        self._audit_lock = threading.Lock()
        self._ctx = threading.local()
        self._watches: set[WatchStream] = set()
        if admission is not None or rbac is not None:  # rbac: the claim status checks
            self.store.objects.admission = self._admit
        self._httpd = Server(("127.0.0.1", port), Handler)
        self._httpd.api = self
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._routes: list[tuple[re.Pattern[str], Callable[..., tuple[int, JsonObject]]]] = [
            (_SLICES, self._slices),
            (_CLAIM, self._claim),
            (OBJECT_PATH, self._generic),
        ]
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._printer_columns: dict[str, list[JsonObject]] = {}  # "<apiVersion>/<Kind>" -> CRD columns
        for rt in BUILTIN_TYPES:
            self.register(rt)

    def register(self, rt: ResourceType) -> None:
        """Serve a resource type through the generic routes (as installing a CRD does)."""
        self._types[(rt.group, rt.version, rt.plural)] = rt

    def install_crd(self, crd: JsonObject) -> ResourceType:
        """Install a CustomResourceDefinition: serve it, prune and check fields by its schema, enforce
        its ``self == oldSelf`` rules and its status subresource (see :meth:`ObjectStore.install_crd`)."""
        rt = self.store.objects.install_crd(crd)
        self.register(rt)
        for version in crd["spec"]["versions"]:
            columns = version.get("additionalPrinterColumns")
            if columns:
                self._printer_columns[f"{rt.group}/{version['name']}/{rt.kind}"] = list(columns)
        return rt

    def as_table(
        self, answer: Answer | WatchAnswer, accept: str | None, query: Mapping[str, str]
    ) -> Answer | WatchAnswer:
        """The answer to a GET of objects as the ``meta.k8s.io`` Table the ``Accept`` header asks for
        first (:mod:`.testing_tables`: the printers' columns), or unchanged when it asks for plain JSON.
        A watch sends one Table per event, the column definitions in the first only."""
        version = table_version(accept)
        if version is None:
            return answer
        tabulate = functools.partial(
            to_table,
            version=version,
            include_object=query.get("includeObject", ""),
            custom_columns=self._printer_columns,
        )
        if isinstance(answer, WatchAnswer):
            tabulate({})  # a bad includeObject is a 400 before the watch starts
            convert, sent = answer.convert, [False]

            def table_event(obj: JsonObject) -> JsonObject:
                first, sent[0] = not sent[0], True
                return tabulate(convert(obj), headers=first)

            return WatchAnswer(answer.stream, table_event)
        if answer.code != 200 or "metadata" not in answer.body:
            return answer
        table = tabulate(answer.body)
        return Answer(200, table, answer.warnings)

    def add_user(
        self, user: str, token: str | None = None, *, extra: Mapping[str, list[str]] | None = None
    ) -> str:
        """Accept a bearer token (a new random one by default) for ``user``. Returns the token."""
        token = token or secrets.token_hex(16)
        self._users[token] = user
        self._extras[token] = {k: list(v) for k, v in (extra or {}).items()}
        return token

    def add_service_account(self, namespace: str, name: str, *, node: str | None = None) -> str:
        """A token of the ServiceAccount ``namespace/name`` (``system:serviceaccount:<ns>:<name>``);
        with ``node``, bound to a pod on that node: its user info then carries the node's name
        (``authentication.kubernetes.io/node-name``, ServiceAccountTokenPodNodeInfo, on since 1.32)."""
        extra = {NODE_NAME_EXTRA: [node]} if node else None
        return self.add_user(service_account_user(namespace, name), extra=extra)

    def audit(self, user: str | None = None) -> list[Attributes]:
        """Every authorized request so far (of ``user`` only, if given), oldest first."""
        with self._audit_lock:
            return [a for a in self._audit if user is None or a.user == user]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        """Serve in a daemon thread. Returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, args=(0.05,), name="nvdra-apiserver", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, end open watches, close keep-alive connections and the listening socket."""
        with self._conns_lock:
            watches = list(self._watches)
        for stream in watches:
            stream.close()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        with self._conns_lock:
            for conn in list(self._conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    continue
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def write_kubeconfig(self, path: str | Path, *, token: str | None = None) -> Path:
        """Write a kubeconfig (plain http) that points at this server, with ``token`` (else the admin
        token, when set)."""
        token = token or self._token
        user: JsonObject = {"token": token} if token else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "nvdra-test", "cluster": {"server": self.url}}],
            "users": [{"name": "nvdra-test", "user": user}],
            "contexts": [{"name": "nvdra-test", "context": {"cluster": "nvdra-test", "user": "nvdra-test"}}],
            "current-context": "nvdra-test",
        }
        target = Path(path)
        target.write_text(json.dumps(config, indent=2))  # JSON is YAML: the client's loader reads it
        return target

    # --- request handling (called from handler threads) ------------------------------------------

    def track(self, conn: socket.socket, *, open_: bool) -> None:
        """Remember open connections so :meth:`close` can end them."""
        with self._conns_lock:
            if open_:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def track_watch(self, stream: WatchStream, *, open_: bool) -> None:
        """Remember open watches so :meth:`close` can end them."""
        with self._conns_lock:
            if open_:
                self._watches.add(stream)
            else:
                self._watches.discard(stream)

    def _admit(
        self, operation: str, rt: ResourceType, obj: JsonObject | None, old: JsonObject | None
    ) -> None:
        """The store's admission hook: hand a write made over HTTP to the admission callable."""
        request: Attributes | None = getattr(self._ctx, "request", None)
        if request is not None and obj is not None and old is not None:
            self._authorize_claim_status(request, rt, obj, old)
        if self._admission is None or request is None:  # in-process calls are no requests
            return
        meta = (obj if obj is not None else old or {}).get("metadata") or {}
        groups = ("system:masters", "system:authenticated") if request.user == _ADMIN else request.groups
        self._admission(
            AdmissionRequest(
                operation=operation,
                user=request.user,
                groups=groups,
                extra=getattr(self._ctx, "extra", {}),
                group=rt.group,
                version=rt.version,
                resource=rt.plural,
                subresource=request.subresource,
                kind=rt.kind,
                namespace=meta.get("namespace", "") if rt.namespaced else "",
                name=meta.get("name", ""),
                object=obj,
                old_object=old,
                dry_run=bool(getattr(self._ctx, "dry_run", False)),
            )
        )

    def _authorize_claim_status(
        self, request: Attributes, rt: ResourceType, obj: JsonObject, old: JsonObject
    ) -> None:
        """A ResourceClaim status write's synthetic checks (``resourceclaims/binding``, ``/driver``), as
        the 1.36 status strategy makes them (see :mod:`nvdra.kubeletplugin.testing_claimstatus`)."""
        if (
            self.rbac is None
            or request.user == _ADMIN
            or request.subresource != "status"
            or (rt.group, rt.plural) != (RESOURCE_CLAIMS.group, RESOURCE_CLAIMS.plural)
        ):
            return
        granted: list[Attributes] = []
        meta = obj.get("metadata") or {}
        denial = claim_status_denial(
            self.rbac.allows,
            user=request.user,
            extra=getattr(self._ctx, "extra", {}),
            verb=request.verb,
            claim_name=meta.get("name", ""),
            namespace=meta.get("namespace", ""),
            new=obj,
            old=old,
            granted=granted,
        )
        if denial is not None:
            raise KubeApiError(denial, status=422)
        with self._audit_lock:
            self._audit.extend(granted)

    def authenticate(self, header: str | None) -> str | None:
        """The user a request's bearer token names (None: no authentication configured); else a 401."""
        if self._token is None and not self._users:
            return None
        token = header[len("Bearer ") :] if header and header.startswith("Bearer ") else None
        self._ctx.extra = self._extras.get(token or "", {})
        if token is not None and token == self._token:
            return _ADMIN
        if token is not None and token in self._users:
            return self._users[token]
        raise KubeApiError("Unauthorized", status=401)

    def authorize_request(self, user: str | None, method: str, path: str, query: Mapping[str, str]) -> None:
        """Authorize (RBAC, for users other than the administrator) and audit one request; 403 if denied."""
        request = request_attributes(user or _ADMIN, method, path, query)
        self._ctx.request, self._ctx.dry_run = request, query.get("dryRun") == "All"
        if user is None:
            self._ctx.extra = {}
        if user not in (None, _ADMIN) and self.rbac is not None and not self.rbac.allows(request):
            raise KubeApiError(forbidden_message(request), status=403)
        with self._audit_lock:
            self._audit.append(request)

    def handle(
        self, method: str, path: str, query: dict[str, str], data: bytes, content_type: str
    ) -> Answer | WatchAnswer:
        """Answer one authorized request whose body is ``data`` (JSON, or a patch of ``content_type``)."""
        ctx = self._ctx
        ctx.warnings, ctx.content_type, ctx.spans, ctx.text = [], content_type, {}, ""
        body: Any = {}
        if data:
            if method == "PATCH" and content_type == "application/apply-patch+yaml":
                raise KubeApiError("server-side apply is not served by this test API server", status=415)
            if method == "PATCH" and content_type not in _PATCH_TYPES:
                raise KubeApiError(
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json-patch+json, application/merge-patch+json, "
                    "application/strategic-merge-patch+json",
                    status=415,
                )
            if method != "PATCH" and content_type not in ("application/json", ""):
                raise KubeApiError(f"unsupported media type {content_type!r}", status=415)
            try:
                ctx.text = data.decode()
                if method in ("POST", "PUT") and _RAW_KINDS.search(path):
                    body, ctx.spans = decode_with_spans(ctx.text)
                else:
                    body = json.loads(ctx.text)
            except ValueError as exc:
                raise KubeApiError(f"invalid JSON body: {exc}", status=400) from exc
            wants_list = method == "PATCH" and _PATCH_TYPES[content_type] == "json"
            if not isinstance(body, list if wants_list else dict):
                shape = "a JSON array of operations" if wants_list else "a JSON object"
                raise KubeApiError(f"request body must be {shape}", status=400)
        code, answer = self.route(method, path, query, body)
        if isinstance(answer, WatchAnswer):
            return answer
        return Answer(code, answer, list(ctx.warnings))

    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """Answer one request: (HTTP status, JSON body or a watch). Errors leave as :class:`KubeApiError`."""
        if not hasattr(self._ctx, "warnings"):
            self._ctx.warnings, self._ctx.content_type, self._ctx.spans, self._ctx.text = [], "", {}, ""
        if method == "GET":
            found = self._discovery(path)
            if found is not None:
                return 200, found
        for pattern, handler in self._routes:
            match = pattern.match(path)
            if match:
                return handler(
                    method, query, body, **{k: unquote(v) for k, v in match.groupdict().items() if v}
                )
        raise KubeNotFound("the server could not find the requested resource", status=404)

    # --- helpers of the generic routes -----------------------------------------------------------

    def _raw_texts(self, rt: ResourceType, wire: JsonObject) -> dict[str, str] | None:
        """The RawExtension texts of the request body, as sent (None: not a request from the wire)."""
        spans = getattr(self._ctx, "spans", {})
        if not spans:
            return None
        text = self._ctx.text
        out: dict[str, str] = {}
        for path, value in raw_extensions(rt, wire).items():
            span = spans.get(id(value))
            out[path] = text[span[0] : span[1]] if span else json.dumps(value, separators=(",", ":"))
        return out

    def _check_fields(self, rt: ResourceType, version: str, obj: Any, query: Mapping[str, str]) -> None:
        """``fieldValidation``: Strict refuses unknown fields (400), Warn (default) sends warnings; then
        unknown fields of built-in kinds are dropped, as decoding into the typed object drops them."""
        mode = query.get("fieldValidation") or "Warn"
        if mode not in _FIELD_VALIDATION:
            raise KubeApiError(
                f'fieldValidation: Unsupported value: "{mode}": supported values: "Ignore", "Strict", "Warn"',
                status=400,
            )
        if not isinstance(obj, dict):
            return
        if rt.custom:
            unknown = self.store.objects.unknown_fields(rt, obj)
        else:
            kind = obj.get("kind") or rt.kind
            unknown = builtin_unknown_fields(rt, version, kind, obj, self.store.kubernetes_version)
            if unknown is None and mode == "Strict":
                raise KubeApiError(
                    f"fieldValidation=Strict for {rt.qualified}: the kubernetes-validate package (the "
                    "built-in kinds' schemas) is not installed here",
                    status=500,
                )
        unknown = [u for u in unknown or [] if u.split(".")[0] not in ("apiVersion", "kind")]
        if unknown and mode == "Strict":
            raise KubeApiError(
                "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown), status=400
            )
        if mode == "Warn":
            self._ctx.warnings.extend(f'unknown field "{u}"' for u in unknown)
        if not rt.custom:  # a custom resource is pruned by the store, by its CRD schema
            for path in unknown:
                drop_field(obj, path)

    def _watch(
        self,
        rt: ResourceType,
        ns: str | None,
        query: Mapping[str, str],
        convert: Callable[[JsonObject], JsonObject],
    ) -> WatchAnswer:
        try:
            timeout = float(query.get("timeoutSeconds") or 1800)
        except ValueError:
            raise KubeApiError(
                f"timeoutSeconds: invalid value {query['timeoutSeconds']!r}", status=400
            ) from None
        stream = self.store.objects.watch_objects(
            rt,
            ns,
            label_selector=query.get("labelSelector", ""),
            field_selector=query.get("fieldSelector", ""),
            resource_version=query.get("resourceVersion", ""),
            timeout_s=timeout,
            allow_bookmarks=query.get("allowWatchBookmarks") in ("1", "true", "True"),
        )
        return WatchAnswer(stream, convert)

    def _list(
        self,
        rt: ResourceType,
        ns: str | None,
        query: Mapping[str, str],
        api_version: str,
        convert: Callable[[JsonObject], JsonObject],
    ) -> tuple[int, Any]:
        """LIST (``limit``/``continue`` answered with the whole list, which the apiserver may do) or WATCH."""
        if query.get("watch") in ("1", "true", "True"):
            return 200, self._watch(rt, ns, query, convert)
        items, revision = self.store.objects.list_versioned(
            rt,
            ns,
            label_selector=query.get("labelSelector", ""),
            field_selector=query.get("fieldSelector", ""),
        )
        return 200, {
            "kind": f"{rt.kind}List",
            "apiVersion": api_version,
            "metadata": {"resourceVersion": revision},
            "items": [convert(i) for i in items],
        }

    @staticmethod
    def _check_namespace(body: JsonObject, ns: str | None) -> None:
        given = (body.get("metadata") or {}).get("namespace")
        if given and ns is not None and given != ns:
            raise KubeApiError(
                "the namespace of the provided object does not match the namespace sent on the request",
                status=400,
            )

    def _discovery(self, path: str) -> JsonObject | None:
        served = [v for v in SUPPORTED_VERSIONS if v in self.store.served_versions]
        group_versions = [{"groupVersion": f"{RESOURCE_GROUP}/{v}", "version": v} for v in served]
        group: JsonObject = {"name": RESOURCE_GROUP, "versions": group_versions}
        if group_versions:
            group["preferredVersion"] = group_versions[0]
        if path == "/version":
            major, minor = self.store.kubernetes_version
            return {
                "major": str(major),
                "minor": str(minor),
                "gitVersion": f"v{major}.{minor}.0-nvdra",
                "platform": "linux/amd64",
            }
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group] if served else []}
        if path == f"/apis/{RESOURCE_GROUP}" and served:
            return {"kind": "APIGroup", "apiVersion": "v1", **group}
        return None

    def _check_version(self, version: str) -> None:
        if version not in self.store.served_versions or version not in SUPPORTED_VERSIONS:
            raise KubeNotFound("the server could not find the requested resource", status=404)

    def _slices(self, method: str, query: dict[str, str], body: Any, *, v: str, name: str = "") -> Any:
        self._check_version(v)
        if method == "GET" and not name:
            api_version = f"{RESOURCE_GROUP}/{v}"
            return self._list(RESOURCE_SLICES, None, query, api_version, lambda s: slice_to_version(s, v))
        if method in ("GET", "POST", "PUT", "DELETE"):
            return self._generic(
                method, query, body, plural="resourceslices", group=RESOURCE_GROUP, gv=v, name=name
            )
        raise KubeApiError(f"method {method} is not allowed here", status=405)

    @staticmethod
    def _incoming(body: JsonObject, version: str, kind: str = "ResourceSlice") -> JsonObject:
        expected = f"{RESOURCE_GROUP}/{version}"
        if body.get("apiVersion") != expected or body.get("kind") != kind:
            raise KubeApiError(
                f"the API version in the data ({body.get('apiVersion')}) does not match the expected "
                f"API version ({expected}), or kind is not {kind}",
                status=400,
            )
        unknown = shape_problems(kind, body, version)
        if unknown:
            raise KubeApiError(
                f"{kind} in version {version} cannot be handled: strict decoding error: "
                + ", ".join(unknown),
                status=400,
            )
        return slice_from_version(body) if kind == "ResourceSlice" else resource_from_version(kind, body)

    def _claim(self, method: str, query: dict[str, str], body: Any, *, v: str, ns: str, name: str) -> Any:
        self._check_version(v)
        if method != "GET":
            return self._generic(
                method, query, body, plural="resourceclaims", group=RESOURCE_GROUP, gv=v, ns=ns, name=name
            )
        return 200, claim_to_version(self.store.get_resource_claim(ns, name), v)

    def _generic_type(self, group: str, version: str, plural: str) -> ResourceType:
        """The registered type a generic path names; resource.k8s.io types at every served version."""
        if group == RESOURCE_GROUP:
            # Stored once (v1 shape, by the v1 type), served at every version the store serves.
            self._check_version(version)
            version = "v1"
        rt = self._types.get((group, version, plural))
        if rt is None:
            raise KubeNotFound("the server could not find the requested resource", status=404)
        return rt

    def _generic(  # noqa: PLR0912 - one branch per verb, as the apiserver's REST handlers
        self,
        method: str,
        query: dict[str, str],
        body: Any,
        *,
        plural: str,
        cv: str = "",
        group: str = "",
        gv: str = "",
        ns: str | None = None,
        name: str = "",
        sub: str = "",
    ) -> Any:
        version = gv or cv
        rt = self._generic_type(group, version, plural)
        dry_run = query.get("dryRun", "")
        if dry_run not in ("", "All"):
            raise KubeApiError(f'dryRun: Unsupported value: "{dry_run}": supported values: "All"', status=400)
        if dry_run and method in ("POST", "PUT", "PATCH", "DELETE"):
            with self.store.objects.dry_run():
                return self._generic(
                    method,
                    {k: v for k, v in query.items() if k != "dryRun"},
                    body,
                    plural=plural,
                    cv=cv,
                    group=group,
                    gv=gv,
                    ns=ns,
                    name=name,
                    sub=sub,
                )
        objects = self.store.objects
        if (method == "POST" and name) or (method in ("PUT", "PATCH", "DELETE") and not name):
            raise KubeApiError(f"method {method} is not allowed here", status=405)
        if sub and not rt.status_subresource:
            raise KubeNotFound("the server could not find the requested resource", status=404)
        if rt.namespaced and name and ns is None:
            raise KubeNotFound("the server could not find the requested resource", status=404)

        def out(obj: JsonObject) -> JsonObject:
            return resource_to_version(rt.kind, obj, version) if group == RESOURCE_GROUP else obj

        raw = None
        if method in ("POST", "PUT"):
            self._check_namespace(body, ns)
            raw = self._raw_texts(rt, body)
            if group == RESOURCE_GROUP:  # another version's fields are refused there; now in v1's shape
                body = self._incoming(body, version, rt.kind)
            self._check_fields(rt, rt.version, body, query)
        if method == "GET" and not name:
            return self._list(rt, ns, query, f"{group}/{version}" if group else version, out)
        if method == "GET":
            return 200, out(objects.get_object(rt, name, ns))
        if method == "POST" and not name:
            if rt.namespaced:
                body.setdefault("metadata", {})["namespace"] = ns or "default"
            return 201, out(objects.create_object(rt, body, raw=raw))
        if method == "PUT" and name:
            if (body.get("metadata") or {}).get("name") != name:
                raise KubeApiError("the name of the object does not match the name on the URL", status=400)
            if rt.namespaced:
                body["metadata"]["namespace"] = ns or "default"
            return 200, out(objects.update_object(rt, body, status=sub == "status", raw=raw))
        if method == "PATCH" and name:
            patch_type = _PATCH_TYPES.get(self._ctx.content_type, "merge")
            if patch_type != "json":
                self._check_fields(rt, version, {"kind": rt.kind, **without_directives(body)}, query)
            patched = objects.patch_object(rt, name, body, ns, patch_type=patch_type, status=sub == "status")
            return 200, out(patched)
        if method == "DELETE" and name:
            preconditions = (body.get("preconditions") or {}) if isinstance(body, dict) else {}
            deleted = objects.delete_object(
                rt,
                name,
                ns,
                uid=preconditions.get("uid"),
                resource_version=preconditions.get("resourceVersion"),
                missing_ok=False,
                propagation=query.get("propagationPolicy")
                or (body.get("propagationPolicy") if isinstance(body, dict) else None)
                or "Background",
            )
            return 200, out(deleted or {})
        raise KubeApiError(f"method {method} is not allowed here", status=405)
