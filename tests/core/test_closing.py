"""The ``with`` mixin: the block gets the object itself and ends with ``close()``, raised or not."""

import pytest

from nvdra.core.closing import Closing


class _Resource(Closing):
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_with_gives_the_object_and_closes_it_once() -> None:
    resource = _Resource()
    with resource as entered:
        assert entered is resource
        assert resource.closed == 0
    assert resource.closed == 1


def test_an_exception_still_closes_and_propagates() -> None:
    resource = _Resource()
    with pytest.raises(ValueError, match="boom"), resource:
        raise ValueError("boom")
    assert resource.closed == 1


def test_a_class_without_close_cannot_be_built() -> None:
    class Incomplete(Closing):
        """Forgets to say how it closes."""

    with pytest.raises(TypeError, match="close"):
        Incomplete()  # type: ignore[abstract]
