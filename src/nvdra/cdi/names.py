"""CDI names: vendor, class, device names, qualified device names, kinds and spec file names.

The rules are those of the CDI reference parser (``container-device-interface/pkg/parser``), which is
what container runtimes apply when they load a spec or resolve a requested device:

* vendor and class: start with an ASCII letter, end with an ASCII letter or digit, and contain only
  ``[A-Za-z0-9_.-]`` in between;
* device name: starts and ends with an ASCII letter or digit, contains only ``[A-Za-z0-9_.:-]`` in between;
* qualified device name: ``<vendor>/<class>=<name>``; kind: ``<vendor>/<class>``;
* transient (per claim) spec name: ``<vendor>-<class>_<id>``, with every ``/`` in the id replaced by ``_``.

Invariant owned here: any name this module returns or accepts as valid is safe to use as a single path
component inside the CDI directory (no ``/``, no NUL, never ``.`` or ``..``), so a claim UID can never
make a spec land outside the CDI root.
"""

from __future__ import annotations

__all__ = [
    "check_path_component",
    "kind",
    "parse_kind",
    "parse_qualified_name",
    "qualified_name",
    "transient_spec_name",
    "validate_class_name",
    "validate_device_name",
    "validate_vendor_name",
]

import functools
import re

from nvdra.core.errors import CdiError

_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ALNUM = _LETTERS | frozenset("0123456789")

# Linux NAME_MAX; a spec file name (with its ".yaml") must fit in one directory entry.
_NAME_MAX = 255


@functools.cache
def _name_rule(letter_first: bool, punctuation: str) -> re.Pattern[str]:
    """:func:`_check_name`'s rule as one pattern, for the common case of a valid name."""
    first = "A-Za-z" if letter_first else "A-Za-z0-9"
    return re.compile(f"[{first}](?:[A-Za-z0-9{re.escape(punctuation)}]*[A-Za-z0-9])?")


def _check_name(what: str, value: str, *, letter_first: bool, punctuation: str) -> None:
    """The CDI parser's name rule: an ASCII letter (or, unless ``letter_first``, a digit) starts it,
    an ASCII letter or digit ends it, and between them stand those and the ``punctuation`` characters."""
    if _name_rule(letter_first, punctuation).fullmatch(value):
        return  # valid: the walk below only finds what to say about an invalid name
    if not value:
        raise CdiError(f"invalid CDI {what} name: empty")
    first, start = (_LETTERS, "an ASCII letter") if letter_first else (_ALNUM, "an ASCII letter or digit")
    if value[0] not in first:
        raise CdiError(f"invalid CDI {what} name {value!r}: must start with {start}")
    if value[-1] not in _ALNUM:
        raise CdiError(f"invalid CDI {what} name {value!r}: must end with an ASCII letter or digit")
    for char in value[1:-1]:
        if char not in _ALNUM and char not in punctuation:
            allowed = ", ".join(repr(c) for c in punctuation)
            raise CdiError(
                f"invalid CDI {what} name {value!r}: character {char!r} not allowed "
                f"(allowed: ASCII letters, digits, {allowed})"
            )


def validate_vendor_name(vendor: str) -> None:
    """Check a CDI vendor name (the part before ``/`` in a kind).

    Raises:
        CdiError: the name breaks the CDI parser rules; the message names the offending character.
    """
    _check_name("vendor", vendor, letter_first=True, punctuation="_-.")


def validate_class_name(cls: str) -> None:
    """Check a CDI class name (the part after ``/`` in a kind).

    Raises:
        CdiError: the name breaks the CDI parser rules.
    """
    _check_name("class", cls, letter_first=True, punctuation="_-.")


def validate_device_name(name: str) -> None:
    """Check a CDI device name (the part after ``=`` in a qualified name).

    Raises:
        CdiError: the name is empty, does not start/end with an ASCII letter or digit, or holds a
            character outside ``[A-Za-z0-9_.:-]``.
    """
    _check_name("device", name, letter_first=False, punctuation="_-.:")


def kind(vendor: str, cls: str) -> str:
    """The spec kind ``<vendor>/<class>``, validated.

    Raises:
        CdiError: vendor or class is invalid.
    """
    validate_vendor_name(vendor)
    validate_class_name(cls)
    return f"{vendor}/{cls}"


def parse_kind(value: str) -> tuple[str, str]:
    """Split and validate a kind ``<vendor>/<class>``.

    Returns:
        ``(vendor, class)``.

    Raises:
        CdiError: the kind is not of that form or either part is invalid.
    """
    vendor, sep, cls = value.partition("/")
    if not sep or not vendor or not cls:
        raise CdiError(f"invalid CDI kind {value!r}: must be <vendor>/<class>")
    validate_vendor_name(vendor)
    validate_class_name(cls)
    return vendor, cls


def qualified_name(vendor: str, cls: str, name: str) -> str:
    """The fully qualified device name ``<vendor>/<class>=<name>``, validated.

    >>> qualified_name("k8s.gpu.nvidia.com", "claim", "uid-gpu-0")
    'k8s.gpu.nvidia.com/claim=uid-gpu-0'

    Raises:
        CdiError: any part is invalid.
    """
    validate_device_name(name)
    return f"{kind(vendor, cls)}={name}"


def parse_qualified_name(device: str) -> tuple[str, str, str]:
    """Split and validate a qualified device name the way the CDI parser does.

    Returns:
        ``(vendor, class, name)``.

    Raises:
        CdiError: the string is unqualified (a path, no ``=``, no ``/``, an empty part) or a part is invalid.
    """
    head, sep, name = device.partition("=")
    if device.startswith("/") or not sep or not head or not name:
        raise CdiError(f"unqualified CDI device {device!r}: must be <vendor>/<class>=<name>")
    vendor, cls = parse_kind(head)
    validate_device_name(name)
    return vendor, cls, name


def check_path_component(value: str, what: str) -> str:
    """Refuse a value that could escape a directory when used as (part of) a file name.

    Args:
        value: the untrusted text, e.g. a claim UID.
        what: what the value is, for the error message.

    Returns:
        ``value`` unchanged.

    Raises:
        CdiError: the value is empty, contains ``/``, ``..`` or NUL, or is longer than NAME_MAX.
    """
    if not value:
        raise CdiError(f"{what} is empty")
    for bad in ("/", "..", "\0"):
        if bad in value:
            raise CdiError(f"{what} {value!r} contains {bad!r}; it must stay a single path component")
    if len(value.encode()) > _NAME_MAX:
        raise CdiError(f"{what} is {len(value.encode())} bytes long; at most {_NAME_MAX} allowed")
    return value


def transient_spec_name(vendor: str, cls: str, transient_id: str) -> str:
    """CDI's transient spec name ``<vendor>-<class>_<id>`` (``/`` in the id becomes ``_``).

    The result is the file name without its extension, e.g.
    ``k8s.gpu.nvidia.com-claim_<claimUID>``.

    Raises:
        CdiError: vendor or class is invalid, or the id holds ``..`` or NUL, or the name is too long.
    """
    validate_vendor_name(vendor)
    validate_class_name(cls)
    safe_id = check_path_component(transient_id.replace("/", "_"), "transient spec id")
    name = f"{vendor}-{cls}_{safe_id}"
    # The writer appends ".yaml"; the whole file name must fit in one directory entry.
    if len(name.encode()) + len(".yaml") > _NAME_MAX:
        raise CdiError(f"transient spec name {name!r} is too long for a file name (NAME_MAX {_NAME_MAX})")
    return name
