"""The NVML error classes: one per return value, found again by :func:`nvml_error_for_code`."""

from __future__ import annotations

import pytest

from nvdra.core import errors
from nvdra.core.errors import NvmlError, NvmlGpuLost, NvmlInUse, ReturnCodeError, nvml_error_for_code

# nvml.h: nvmlReturn_t values the driver tells apart.
_NVML_H = {
    "NvmlUninitialized": 1,
    "NvmlInvalidArgument": 2,
    "NvmlNotSupported": 3,
    "NvmlNoPermission": 4,
    "NvmlNotFound": 6,
    "NvmlLibraryNotFound": 12,
    "NvmlGpuLost": 15,
    "NvmlResetRequired": 16,
    "NvmlInUse": 19,
    "NvmlInsufficientResources": 23,
}


@pytest.mark.parametrize(("name", "code"), sorted(_NVML_H.items()))
def test_each_code_builds_its_own_class(name: str, code: int) -> None:
    cls = getattr(errors, name)
    error = nvml_error_for_code(code, "nvmlDoThing")
    assert type(error) is cls
    assert error.code == code == cls.code
    assert str(error) == "nvmlDoThing"


def test_an_unnamed_code_is_a_plain_nvml_error_carrying_it() -> None:
    error = nvml_error_for_code(7, "nvmlDeviceGetName")
    assert type(error) is NvmlError
    assert error.code == 7


def test_the_code_keyword_overrides_per_instance_only() -> None:
    assert NvmlGpuLost("lost", code=99).code == 99
    assert NvmlGpuLost("lost").code == 15
    assert NvmlError("plain").code == 999


def test_a_second_class_for_a_taken_code_is_refused() -> None:
    with pytest.raises(TypeError, match="_Twin: return value 19 is already NvmlInUse's"):

        class _Twin(NvmlError, code=NvmlInUse.code):
            """Would shadow NvmlInUse."""

    assert nvml_error_for_code(19, "x").__class__ is NvmlInUse


def test_each_family_keeps_its_own_codes() -> None:
    """A second SDK's family may reuse NVML's values; for_code looks only inside its own family."""

    class _Sdk(ReturnCodeError):
        """A made-up SDK's errors."""

        code = -1

    class _SdkBusy(_Sdk, code=19):
        """The made-up SDK's 'busy'."""

    busy = _Sdk.for_code(19, "sdkCall")
    assert type(busy) is _SdkBusy and busy.code == 19
    assert type(NvmlError.for_code(19, "nvmlCall")) is NvmlInUse
    assert type(_Sdk.for_code(23, "sdkCall")) is _Sdk
    assert (
        type(NvmlInUse.for_code(15, "nvmlCall")) is NvmlInUse
    )  # a class answers only with its own subclasses
