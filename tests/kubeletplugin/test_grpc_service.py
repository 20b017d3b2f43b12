"""NodePrepare/NodeUnprepare over real unix sockets, through the helper and the kubelet test client."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvdra.core import errors
from nvdra.kubeletplugin import helper as helper_mod
from nvdra.kubeletplugin.client import KubeletClient, RegisteredPlugin
from nvdra.kubeletplugin.helper import Helper, PluginOptions
from nvdra.kubeletplugin.types import ClaimRef
from tests.kubeletplugin.conftest import DRIVER, ClaimStore, TinyDriver, make_claim


@pytest.fixture
def driver() -> TinyDriver:
    return TinyDriver()


@pytest.fixture
def store() -> ClaimStore:
    return ClaimStore(
        make_claim("a", "uid-a"),
        make_claim("b", "uid-b", requests=("gpu/large", "nic")),
        make_claim("pending", "uid-p"),
    )


Running = tuple[Helper, KubeletClient]


@pytest.fixture
def running(dirs: tuple[Path, Path], driver: TinyDriver, store: ClaimStore) -> Iterator[Running]:
    data, reg = dirs
    options = PluginOptions(driver_name=DRIVER, node_name="node-a", plugin_data_dir=data, registrar_dir=reg)
    h = helper_mod.start(driver, store, options)
    with h, KubeletClient(reg, timeout=10) as kubelet:
        yield h, kubelet


def _plugin(running: Running, api: str) -> RegisteredPlugin:
    h, kubelet = running
    return kubelet.register(h.registration_socket, api=api)


A = ClaimRef(namespace="default", name="a", uid="uid-a")
B = ClaimRef(namespace="default", name="b", uid="uid-b")


@pytest.mark.parametrize("api", ["v1", "v1beta1"])
def test_prepare_and_unprepare_round_trip(running: Running, driver: TinyDriver, api: str) -> None:
    """Both API versions prepare every claim with the driver's devices and unprepare them."""
    plugin = _plugin(running, api)
    assert plugin.api_version == api
    results = plugin.prepare([A, B])
    assert set(results) == {"uid-a", "uid-b"}
    assert [d.device_name for d in results["uid-a"].devices] == ["gpu-0"]
    assert results["uid-a"].devices[0].cdi_device_ids == (f"k8s.{DRIVER}/claim=uid-a-gpu-0",)
    assert not results["uid-a"].error and not results["uid-b"].error
    assert plugin.unprepare([A, B]) == {"uid-a": "", "uid-b": ""}
    assert driver.unprepared == [["uid-a", "uid-b"]]


def test_subrequest_suffix_is_stripped(running: Running) -> None:
    """A device serving `gpu/large` is reported for request `gpu` only."""
    results = _plugin(running, "v1").prepare([B])
    assert [d.requests for d in results["uid-b"].devices] == [("gpu",), ("nic",)]


@pytest.mark.parametrize(("api", "expected"), [("v1", "share-7"), ("v1beta1", None)])
def test_share_id_only_on_v1(running: Running, driver: TinyDriver, api: str, expected: str | None) -> None:
    """share_id reaches the kubelet over v1 and is absent over v1beta1."""
    driver.share_id = "share-7"
    results = _plugin(running, api).prepare([A])
    assert results["uid-a"].devices[0].share_id == expected


def test_share_id_unset_stays_absent_on_v1(running: Running) -> None:
    """A device without share_id is sent without the optional field."""
    results = _plugin(running, "v1").prepare([A])
    assert results["uid-a"].devices[0].share_id is None


def test_per_claim_errors_do_not_fail_other_claims(
    running: Running, driver: TinyDriver, store: ClaimStore
) -> None:
    """UID mismatch, not-allocated and not-found claims fail alone; the rest is prepared."""
    store.claims[("default", "pending")]["status"] = {}
    wrong_uid = ClaimRef(namespace="default", name="a-renamed", uid="uid-old")
    store.add(make_claim("a-renamed", "uid-new"))
    claims = [
        A,
        wrong_uid,
        ClaimRef(namespace="default", name="pending", uid="uid-p"),
        ClaimRef(namespace="other", name="gone", uid="uid-gone"),
    ]
    results = _plugin(running, "v1").prepare(claims)
    assert set(results) == {"uid-a", "uid-old", "uid-p", "uid-gone"}
    assert results["uid-a"].devices and not results["uid-a"].error
    assert "UID mismatch: expected uid-old, got uid-new" in results["uid-old"].error
    assert "default/a-renamed" in results["uid-old"].error
    assert "not allocated" in results["uid-p"].error
    assert "other/gone" in results["uid-gone"].error and "not found" in results["uid-gone"].error
    assert driver.prepared == [["uid-a"]]


def test_claim_fetch_failure_is_a_claim_error(running: Running, store: ClaimStore) -> None:
    """An API outage during the GET becomes a per-claim error, not a failed RPC."""
    store.fail_with = errors.KubeUnavailable("apiserver down", status=503)
    results = _plugin(running, "v1").prepare([A])
    assert "apiserver down" in results["uid-a"].error


def test_driver_exception_fails_every_claim_and_server_survives(running: Running, driver: TinyDriver) -> None:
    """A raising driver yields a per-claim error for all claims; the next call works."""
    plugin = _plugin(running, "v1beta1")
    driver.raise_on_prepare = RuntimeError("nvml exploded")
    results = plugin.prepare([A, B])
    assert {uid: "nvml exploded" in r.error for uid, r in results.items()} == {"uid-a": True, "uid-b": True}
    driver.raise_on_unprepare = OSError("disk gone")
    assert all("disk gone" in e for e in plugin.unprepare([A, B]).values())
    driver.raise_on_prepare = driver.raise_on_unprepare = None
    assert not plugin.prepare([A])["uid-a"].error


def test_missing_driver_answers_become_errors(running: Running, driver: TinyDriver) -> None:
    """Claims the driver leaves out are answered with an error; foreign UIDs never leak."""
    driver.skip_uids = {"uid-b"}
    plugin = _plugin(running, "v1")
    results = plugin.prepare([A, B])
    assert set(results) == {"uid-a", "uid-b"}
    assert "no result" in results["uid-b"].error
    assert plugin.unprepare([A, B]) == {"uid-a": "", "uid-b": f"driver returned no result for claim {B}"}


def test_empty_prepare_is_a_fast_probe(running: Running, driver: TinyDriver, store: ClaimStore) -> None:
    """An empty request answers empty without GETs or driver calls."""
    assert _plugin(running, "v1").prepare([]) == {}
    assert store.gets == [] and driver.prepared == []


def test_claims_of_one_call_are_fetched_before_the_lock(
    running: Running, driver: TinyDriver, store: ClaimStore
) -> None:
    """While one prepare holds the driver, another call's claim GET already happens."""
    plugin = _plugin(running, "v1")
    driver.gate = threading.Event()
    first = threading.Thread(target=plugin.prepare, args=([A],))
    first.start()
    try:
        assert driver.entered.wait(10)
        second = threading.Thread(target=plugin.prepare, args=([B],))
        second.start()
        for _ in range(1000):
            if ("default", "b") in store.gets:
                break
            threading.Event().wait(0.005)
        assert ("default", "b") in store.gets
        assert driver.prepared == []  # the first call is still inside the driver
    finally:
        driver.gate.set()
        first.join(10)
        second.join(10)
    assert sorted(map(tuple, driver.prepared)) == [("uid-a",), ("uid-b",)]


def test_a_many_claim_call_answers_each_claim_from_its_own_get(
    running: Running, driver: TinyDriver, store: ClaimStore
) -> None:
    """23 claims over the fetch threads' shares (8 helpers and the calling thread): every claim is
    fetched once, missing ones fail alone, and the driver gets the others in the kubelet's order."""
    refs = [ClaimRef(namespace="default", name=f"c{i}", uid=f"uid-{i}") for i in range(23)]
    for i, ref in enumerate(refs):
        if i % 5 != 3:  # c3, c8, c13, c18 do not exist
            store.add(make_claim(ref.name, ref.uid))
    results = _plugin(running, "v1").prepare(refs)
    assert sorted(store.gets) == sorted((r.namespace, r.name) for r in refs)
    assert {uid for uid, r in results.items() if r.error} == {"uid-3", "uid-8", "uid-13", "uid-18"}
    assert all("not found" in results[f"uid-{i}"].error for i in (3, 8, 13, 18))
    assert driver.prepared == [[r.uid for i, r in enumerate(refs) if i % 5 != 3]]
