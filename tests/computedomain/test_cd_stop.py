"""Stopping the CD plugin ends a channel prepare's wait for its daemon at once (seen on a real 1.36
cluster: SIGTERM during the 45 s wait logged "stopping took over 20 s" with the thread in _wait_ready)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, cast

from nvdra.core.featuregates import parse_feature_gates
from nvdra.kubeletplugin import FakeKube
from nvdra.plugins.computedomain.driver import ComputeDomainDriver, NotReady


class _Store:
    boot_id = "boot"


def test_stop_ends_the_wait_for_the_daemon_with_a_retryable_error(tmp_path: Path) -> None:
    driver = ComputeDomainDriver(
        node_name="n1",
        clique_id="",
        gates=parse_feature_gates(""),
        store=cast(Any, _Store()),
        specs=cast(Any, None),
        kube=cast(Any, FakeKube()),  # no ComputeDomain: never Ready
        namespace="nvdra",
        domains_dir=tmp_path,
        ready_timeout_s=45.0,
    )
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            driver._wait_ready("cd-uid")
        except NotReady as exc:
            raised.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive()  # still waiting for the daemon
    started = time.monotonic()
    driver.stop()
    waiter.join(10)
    assert not waiter.is_alive() and time.monotonic() - started < 5
    assert len(raised) == 1 and "the plugin is stopping" in str(raised[0])
