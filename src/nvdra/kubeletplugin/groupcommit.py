"""Group commit: concurrent calls of one kind joined into one driver call (see :mod:`.service`).

Whoever finds no driver call running leads: it takes the waiting calls, makes one driver call for all
of them under the serializer, and hands the lead on. A call may be announced before it arrives
(:meth:`GroupCommit.expect`: a prepare fetching its claims), and a lead waits a moment for announced
calls, so that concurrent callers share a driver call and its checkpoint write.
"""

from __future__ import annotations

__all__ = ["JOIN_WAIT_S", "Arrival", "GroupCommit"]

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Generic, TypeVar

from nvdra.kubeletplugin.serialize import RequestSerializer

_Item = TypeVar("_Item")
_Answer = TypeVar("_Answer")


class _Job(Generic[_Item, _Answer]):
    """One caller's claims waiting for a driver call."""

    def __init__(self, items: Sequence[_Item], keys: frozenset[str]) -> None:
        self.items = items
        self.keys = keys
        self.answers: Mapping[str, _Answer] = {}
        self.error: BaseException | None = None
        self.done = False
        self.lead = False
        # Held until the job is answered or handed the lead: its caller alone is woken then (a shared
        # condition's notify_all woke every waiting caller after each driver call, all but the answered
        # ones only to go back to sleep).
        self.wake = threading.Lock()
        self.wake.acquire()


JOIN_WAIT_S = 0.002
"""How long a lead waits for announced calls to join its driver call (a claim GET takes ~0.5 ms)."""


class Arrival:
    """A call announced to a :class:`GroupCommit` (:meth:`~GroupCommit.expect`)."""

    def __init__(self) -> None:
        self.done = False


class GroupCommit(Generic[_Item, _Answer]):
    """Joins concurrent calls into one driver call under the serializer (see the module docstring).

    Whoever finds no call running leads: it takes the waiting jobs (its own among them, in arrival
    order, leaving out any that names a key already taken), makes one driver call for all of them, and
    repeats until its own job is answered, then hands the lead to the first waiting job; the others
    wait for their answers (or the lead).
    """

    def __init__(
        self, serializer: RequestSerializer, call: Callable[[list[_Item]], Mapping[str, _Answer]]
    ) -> None:
        self._serializer = serializer
        self._call = call
        self._mutex = threading.Lock()
        self._arrived = threading.Condition(self._mutex)
        self._pending: list[_Job[_Item, _Answer]] = []
        self._running = False
        self._coming = 0  # calls announced by expect() that have not joined (or given up) yet

    def expect(self) -> Arrival:
        """Announce a call that will join soon (its claims are being fetched): a lead about to make a
        driver call waits a moment for it (at most :data:`JOIN_WAIT_S`), so that the calls of
        concurrent callers share driver calls, and checkpoint writes, instead of queueing one by one.
        Pass the result to :meth:`run`, and to :meth:`arrived` where the call does not get there."""
        with self._mutex:
            self._coming += 1
        return Arrival()

    def arrived(self, arrival: Arrival) -> None:
        """The announced call joined or will not come (idempotent)."""
        with self._mutex:
            if not arrival.done:
                arrival.done = True
                self._coming -= 1
                if not self._coming:  # what a waiting lead waits for (a wake-up before is wasted)
                    self._arrived.notify_all()

    def _wait_for_arrivals(self) -> None:
        with self._mutex:
            if self._coming:
                self._arrived.wait_for(lambda: self._coming == 0, JOIN_WAIT_S)

    def run(
        self, items: Sequence[_Item], keys: Iterable[str], arrival: Arrival | None = None
    ) -> Mapping[str, _Answer]:
        """The driver's answers for a call with ``items``; raises what the driver call raised.

        ``keys``: what the call names (claim UIDs, devices); calls sharing a key are never joined.
        With serialization off each call goes straight to the driver: joining would make a call
        wait for another one still in the driver (a ComputeDomain channel prepare waits up to 45 s
        for the daemon whose own claim is then prepared only after it).
        """
        if not self._serializer.enabled:
            return self._call(list(items))
        job: _Job[_Item, _Answer] = _Job(items, frozenset(keys))
        with self._mutex:
            self._pending.append(job)
            job.lead = not self._running
            self._running = True
        if arrival is not None:
            self.arrived(arrival)
        if not job.lead:
            job.wake.acquire()  # until answered, or handed the lead by the lead before it
        if job.lead:
            try:
                while not job.done:
                    self._wait_for_arrivals()
                    self._execute(self._take())
            finally:
                self._hand_over()
        if job.error is not None:
            raise job.error
        return job.answers

    def _hand_over(self) -> None:
        """The lead is done: the first waiting job leads next (its caller is woken), or none runs."""
        with self._mutex:
            if not self._pending:
                self._running = False
                return
            following = self._pending[0]
            following.lead = True
        following.wake.release()

    def _take(self) -> list[_Job[_Item, _Answer]]:
        with self._mutex:
            batch: list[_Job[_Item, _Answer]] = []
            taken: set[str] = set()
            for job in self._pending:
                if not batch or taken.isdisjoint(job.keys):
                    batch.append(job)
                    taken |= job.keys
            self._pending = [j for j in self._pending if j not in batch]
            return batch

    def _execute(self, batch: list[_Job[_Item, _Answer]]) -> None:
        answers: Mapping[str, _Answer] = {}
        error: BaseException | None = None
        try:
            with self._serializer.hold():
                answers = self._call([item for job in batch for item in job.items])
        except Exception as exc:  # every caller of the batch reports it for its claims
            error = exc
        except BaseException as exc:  # so is this one (no caller waits for ever), then the lead raises it
            error = exc
            raise
        finally:
            for job in batch:
                job.answers, job.error, job.done = answers, error, True
                if not job.lead:
                    job.wake.release()
