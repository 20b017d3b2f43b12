"""Deletion as the apiserver and its controllers carry it out: finalizers hold an object
(``deletionTimestamp``), ``propagationPolicy`` Background, Foreground (``foregroundDeletion``) or Orphan,
the garbage collector's owner references, and Namespaces that stay ``Terminating`` until empty."""

from __future__ import annotations

__all__ = ["Deletions"]

from nvdra.core.errors import KubeConflict
from nvdra.kubeletplugin.objects import NAMESPACES, JsonObject, ResourceType
from nvdra.kubeletplugin.store.rules import invalid
from nvdra.kubeletplugin.store.state import Key, StoreState, clone, now

_PROPAGATION = ("Background", "Foreground", "Orphan")
_FOREGROUND = "foregroundDeletion"


class Deletions(StoreState):
    """DELETE and what follows from it (a part of the :class:`~.objectstore.ObjectStore`)."""

    def delete_object(
        self,
        rt: ResourceType,
        name: str,
        namespace: str | None = None,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        missing_ok: bool = True,
        propagation: str = "Background",
    ) -> JsonObject | None:
        """DELETE: gone at once, or only marked (deletionTimestamp) while finalizers remain.

        ``propagation`` is the DeleteOptions' ``propagationPolicy``: ``Background`` (dependents go after
        the owner), ``Foreground`` (the owner waits, with the ``foregroundDeletion`` finalizer, until its
        dependents are gone) or ``Orphan`` (dependents stay, without their reference to the owner).

        Returns:
            the object as deleted or marked; None if it did not exist and ``missing_ok``.

        Raises:
            KubeNotFound: no such object and not ``missing_ok``.
            KubeConflict: a ``uid`` or ``resource_version`` precondition does not hold.
        """
        with self._lock:
            self._on_call("delete", rt.plural, name)
            key = self._key(rt, name, namespace)
            current = self._objects.get(key)
            if current is None:
                if missing_ok:
                    return None
                raise self._missing(rt, name)
            cur_meta = current["metadata"]
            if uid is not None and cur_meta["uid"] != uid:
                raise KubeConflict(
                    f"Precondition failed: UID in precondition: {uid}, UID in object meta: {cur_meta['uid']}",
                    status=409,
                )
            if resource_version is not None and cur_meta["resourceVersion"] != resource_version:
                raise KubeConflict(
                    f"Precondition failed: ResourceVersion in precondition: {resource_version}, "
                    f"ResourceVersion in object meta: {cur_meta['resourceVersion']}",
                    status=409,
                )
            if propagation not in _PROPAGATION:
                raise invalid(
                    rt,
                    name,
                    [
                        f'propagationPolicy: Unsupported value: "{propagation}": supported values: '
                        '"Foreground", "Background", "Orphan"'
                    ],
                )
            if self.admission is not None:
                self.admission("DELETE", rt, None, current)
            return self._delete(rt, key, propagation)

    def _dependents(self, uid: str) -> list[Key]:
        return [
            k
            for k, o in self._objects.items()
            if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
        ]

    def _delete(self, rt: ResourceType, key: Key, propagation: str = "Background") -> JsonObject:
        current = self._objects[key]
        cur_meta = current["metadata"]
        is_namespace = (rt.group, rt.plural) == ("", "namespaces")
        if propagation == "Orphan":
            self._orphaning.add(cur_meta["uid"])
        elif propagation == "Foreground" and self._dependents(cur_meta["uid"]):
            return self._delete_foreground(key, current)
        if cur_meta.get("finalizers") or is_namespace:
            if cur_meta.get("deletionTimestamp"):
                return clone(current)
            marked = clone(current)
            marked["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=0)
            if is_namespace:
                marked.setdefault("status", {})["phase"] = "Terminating"
            marked["metadata"]["resourceVersion"] = self._bump()
            self._set(key, marked)
            self._record("MODIFIED", key, marked, current)
            if is_namespace:
                self._empty_namespace(key[3])
            return clone(marked)
        removed = clone(current)
        removed["metadata"]["resourceVersion"] = self._bump()
        self._remove(key, removed)
        return removed

    def _delete_foreground(self, key: Key, current: JsonObject) -> JsonObject:
        """Foreground: mark the owner (``foregroundDeletion``), delete its dependents, then release it."""
        marked = clone(current)
        meta = marked["metadata"]
        meta.setdefault("deletionTimestamp", now())
        meta["deletionGracePeriodSeconds"] = 0
        if _FOREGROUND not in (meta.get("finalizers") or []):
            meta["finalizers"] = [*(meta.get("finalizers") or []), _FOREGROUND]
        meta["resourceVersion"] = self._bump()
        self._set(key, marked)
        self._record("MODIFIED", key, marked, current)
        for dependent in self._dependents(meta["uid"]):
            if dependent in self._objects:
                self._delete(_type_of(dependent, self._objects[dependent]), dependent)
        self._release_foreground(meta["uid"])
        return clone(self._objects.get(key, marked))

    def _release_foreground(self, owner_uid: str) -> None:
        """The garbage collector: an owner waiting in foreground deletion goes once its dependents did."""
        found = [(k, o) for k, o in self._objects.items() if o["metadata"].get("uid") == owner_uid]
        for key, owner in found:
            finalizers = owner["metadata"].get("finalizers") or []
            if _FOREGROUND not in finalizers or self._dependents(owner_uid):
                continue
            released = clone(owner)
            released["metadata"]["finalizers"] = [f for f in finalizers if f != _FOREGROUND]
            if not released["metadata"]["finalizers"]:
                del released["metadata"]["finalizers"]
            released["metadata"]["resourceVersion"] = self._bump()
            if released["metadata"].get("finalizers"):
                self._set(key, released)
                self._record("MODIFIED", key, released, owner)
            else:
                self._remove(key, released)

    def _remove(self, key: Key, obj: JsonObject) -> None:
        """Drop a stored object (revision already bumped), then what depended on it."""
        previous = self._pop(key)
        self._raw.pop(key, None)
        self._record("DELETED", key, obj, previous)
        self._collect_garbage(obj["metadata"].get("uid"))
        for reference in obj["metadata"].get("ownerReferences") or []:
            self._release_foreground(str(reference.get("uid")))
        if key[2]:
            self._finish_namespace(key[2])

    def _collect_garbage(self, gone_uid: str | None) -> None:
        """Delete objects whose owners are all gone (the garbage collector's background policy), or
        drop their reference to an owner deleted with the ``Orphan`` policy."""
        if not gone_uid:
            return
        if gone_uid in self._orphaning:
            self._orphaning.discard(gone_uid)
            for key in self._dependents(gone_uid):
                dependent = self._objects[key]
                orphan = clone(dependent)
                refs = [r for r in orphan["metadata"]["ownerReferences"] if r.get("uid") != gone_uid]
                orphan["metadata"]["ownerReferences"] = refs
                if not refs:
                    del orphan["metadata"]["ownerReferences"]
                orphan["metadata"]["resourceVersion"] = self._bump()
                self._set(key, orphan)
                self._record("MODIFIED", key, orphan, dependent)
            return
        alive = {o["metadata"].get("uid") for o in self._objects.values()}
        for key, obj in list(self._objects.items()):
            owners = [r.get("uid") for r in obj["metadata"].get("ownerReferences") or []]
            if gone_uid in owners and not any(u in alive for u in owners) and key in self._objects:
                self._delete(_type_of(key, obj), key)

    def _empty_namespace(self, namespace: str) -> None:
        """The namespace controller: delete everything in a Terminating namespace."""
        for key, obj in list(self._objects.items()):
            if key[2] == namespace and key in self._objects:
                self._delete(_type_of(key, obj), key)
        self._finish_namespace(namespace)

    def _finish_namespace(self, namespace: str) -> None:
        key = self._key(NAMESPACES, namespace, None)
        ns = self._objects.get(key)
        if ns is None or not ns["metadata"].get("deletionTimestamp") or ns["metadata"].get("finalizers"):
            return
        if any(k[2] == namespace for k in self._objects):
            return
        removed = clone(ns)
        removed["metadata"]["resourceVersion"] = self._bump()
        self._remove(key, removed)


def _type_of(key: Key, obj: JsonObject) -> ResourceType:
    """The resource type of a stored object (for deletes the store starts itself)."""
    version = str(obj.get("apiVersion", "v1")).rsplit("/", 1)[-1]
    return ResourceType(
        group=key[0], version=version, plural=key[1], kind=str(obj.get("kind", "")), namespaced=bool(key[2])
    )
