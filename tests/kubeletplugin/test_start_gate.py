"""Sockets served before the driver is built (``start_pending``): the kubelet registers the plugin at
once, DRA calls wait at the start gate for ``Helper.ready``, and fail with UNAVAILABLE when start-up
fails, the plugin stops or their deadline comes first; slices only once registered AND ready."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nvdra.kubeletplugin.client import KubeletClient, PluginRpcError, RegisteredPlugin
from nvdra.kubeletplugin.helper import Helper, PluginOptions, start_pending
from nvdra.kubeletplugin.service import PluginNotReady, StartGate
from nvdra.kubeletplugin.types import ClaimRef, DriverResources, Pool, Slice
from tests.kubeletplugin.conftest import DRIVER, ClaimStore, RecordingPublisher, TinyDriver, make_claim

RESOURCES = DriverResources(pools={"node-a": Pool(slices=(Slice(devices=({"name": "gpu-0"},)),))})
CLAIM = ClaimRef(namespace="default", name="c1", uid="uid-1")
_T = TypeVar("_T")


@pytest.fixture
def pending(dirs: tuple[Path, Path]) -> Iterator[Helper]:
    """A helper serving its sockets with no driver yet."""
    data, reg = dirs
    helper = start_pending(
        PluginOptions(driver_name=DRIVER, node_name="node-a", plugin_data_dir=data, registrar_dir=reg)
    )
    with helper:
        yield helper


def _in_thread(call: Callable[[], _T]) -> futures.Future[_T]:
    pool = futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


def _registered(kubelet: KubeletClient, helper: Helper) -> RegisteredPlugin:
    plugin = kubelet.register(helper.registration_socket)
    assert helper.wait_registered(5)
    return plugin


def test_registered_before_ready_and_a_waiting_prepare_succeeds_once_ready(
    pending: Helper, dirs: tuple[Path, Path]
) -> None:
    """The kubelet registers a plugin with no driver yet; a prepare sent then waits (fetching no claim,
    entering no driver) and is answered by the driver handed over later."""
    driver, store = TinyDriver(), ClaimStore(make_claim("c1", "uid-1"))
    with KubeletClient(dirs[1]) as kubelet:
        plugin = _registered(kubelet, pending)
        call = _in_thread(lambda: plugin.prepare([CLAIM]))
        time.sleep(0.3)
        assert not call.done() and store.gets == [] and driver.prepared == []
        pending.ready(driver, store, publisher=RecordingPublisher())
        result = call.result(10)
    assert result["uid-1"].error == "" and [d.device_name for d in result["uid-1"].devices] == ["gpu-0"]
    assert driver.prepared == [["uid-1"]] and pending.driver is driver


def test_unprepare_waits_too_and_empty_calls_are_answered_at_once(
    pending: Helper, dirs: tuple[Path, Path]
) -> None:
    """An empty prepare (the liveness probe) needs no driver; an unprepare waits like a prepare."""
    driver = TinyDriver()
    with KubeletClient(dirs[1]) as kubelet:
        plugin = _registered(kubelet, pending)
        assert plugin.prepare([]) == {} and plugin.unprepare([]) == {}
        call = _in_thread(lambda: plugin.unprepare([CLAIM]))
        time.sleep(0.2)
        assert not call.done()
        pending.ready(driver, ClaimStore())
        assert call.result(10) == {"uid-1": ""}
    assert driver.unprepared == [["uid-1"]]


def test_failed_start_fails_the_waiting_call_with_its_cause(pending: Helper, dirs: tuple[Path, Path]) -> None:
    """Start-up failing after registration ends a waiting call at once with UNAVAILABLE and the cause,
    and every later call the same way; no driver is ever entered."""
    with KubeletClient(dirs[1]) as kubelet:
        plugin = _registered(kubelet, pending)
        call = _in_thread(lambda: plugin.prepare([CLAIM]))
        time.sleep(0.2)
        started = time.monotonic()
        pending.fail_start(RuntimeError("NVML init failed: driver not loaded"))
        with pytest.raises(PluginRpcError) as waited:
            call.result(10)
        assert time.monotonic() - started < 2
        with pytest.raises(PluginRpcError) as later:
            plugin.unprepare([CLAIM])
    for exc in (waited.value, later.value):
        assert exc.code == "UNAVAILABLE"
        assert "start-up failed: NVML init failed: driver not loaded" in str(exc)


def test_a_call_whose_deadline_comes_first_gets_unavailable_before_it(
    pending: Helper, dirs: tuple[Path, Path]
) -> None:
    """A call with a 2 s deadline is refused with UNAVAILABLE ("still starting") shortly before its
    deadline, not left to run into DEADLINE_EXCEEDED."""
    with KubeletClient(dirs[1], timeout=2.0) as kubelet:
        plugin = _registered(kubelet, pending)
        started = time.monotonic()
        with pytest.raises(PluginRpcError) as refused:
            plugin.prepare([CLAIM])
    waited = time.monotonic() - started
    assert refused.value.code == "UNAVAILABLE" and "still starting" in str(refused.value)
    assert 1.5 < waited < 2.0


def test_stopping_before_ready_ends_waiting_calls(dirs: tuple[Path, Path]) -> None:
    """Stopping a plugin that never became ready fails its waiting calls with UNAVAILABLE."""
    data, reg = dirs
    helper = start_pending(
        PluginOptions(driver_name=DRIVER, node_name="node-a", plugin_data_dir=data, registrar_dir=reg)
    )
    with KubeletClient(reg) as kubelet:
        plugin = _registered(kubelet, helper)
        call = _in_thread(lambda: plugin.prepare([CLAIM]))
        time.sleep(0.2)
        helper.stop()
        with pytest.raises(PluginRpcError) as stopped:
            call.result(10)
    assert stopped.value.code == "UNAVAILABLE" and "stopping" in str(stopped.value)
    with pytest.raises(PluginNotReady, match="stopping"):
        helper.ready(TinyDriver(), ClaimStore())


def test_slices_published_only_once_registered_and_ready(pending: Helper, dirs: tuple[Path, Path]) -> None:
    """Registered before ready: nothing starts; ready + desired state: the publisher starts and gets it
    (and a later registration hands it over again)."""
    publisher = RecordingPublisher()
    with KubeletClient(dirs[1]) as kubelet:
        _registered(kubelet, pending)
        pending.ready(TinyDriver(), ClaimStore(), publisher=publisher)
        assert publisher.events == []
        pending.publish_resources(RESOURCES)
        assert publisher.events == [("start", None), ("update", RESOURCES)]
        _registered(kubelet, pending)
        assert publisher.events[-1] == ("update", RESOURCES)


def test_ready_before_registration_publishes_on_registration(
    pending: Helper, dirs: tuple[Path, Path]
) -> None:
    """Ready and given a desired state before the kubelet registered the plugin: published only then."""
    publisher = RecordingPublisher()
    pending.ready(TinyDriver(), ClaimStore(), publisher=publisher)
    pending.publish_resources(RESOURCES)
    assert publisher.events == []
    with KubeletClient(dirs[1]) as kubelet:
        _registered(kubelet, pending)
    assert publisher.events == [("start", None), ("update", RESOURCES)]


def test_health_stream_is_open_and_silent_until_the_driver_reports(
    pending: Helper, dirs: tuple[Path, Path]
) -> None:
    """Before ready the health stream opens and sends nothing; what the driver reports into the
    helper's reporter later reaches it."""
    received: list[Any] = []
    first = threading.Event()
    with KubeletClient(dirs[1]) as kubelet:
        plugin = _registered(kubelet, pending)
        with plugin.watch_health() as watch:

            def consume() -> None:
                for devices in watch:
                    received.append(devices)
                    first.set()

            reader = threading.Thread(target=consume, daemon=True)
            reader.start()
            assert not first.wait(0.3)
            pending.ready(TinyDriver(), ClaimStore())
            pending.health.report([])
            assert first.wait(5)
            watch.cancel()
        reader.join(5)
    assert received == [[]]


def test_gate_open_wins_over_a_later_failure() -> None:
    """Once open, fail() changes nothing; once failed, open() is refused."""
    opened, failed = StartGate(), StartGate()
    service: Any = object()
    opened.open(service)
    opened.fail("late")
    assert opened.wait(0) is service
    failed.fail("boom")
    with pytest.raises(PluginNotReady, match="boom"):
        failed.open(service)
    with pytest.raises(PluginNotReady, match="boom"):
        failed.wait(None)
