"""Kubernetes resource quantities (``3000``, ``3Gi``, ``500m``, ``1e3``) as exact decimals.

The grammar is apimachinery's: ``<sign><digits>[.<digits>]<suffix>`` where the suffix is a binary SI
suffix (Ki…Ei), a decimal SI suffix (n u m k M G T P E) or a decimal exponent (``e3``, ``E-2``).
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, InvalidOperation

from hami.errors import QuantityError

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$"
)
_MAX_EXPONENT = 1000  # beyond any real quantity; keeps Decimal arithmetic bounded on hostile input
# Exact arithmetic: inputs have at most 128 characters, a suffix adds at most 19 digits.
_EXACT = Context(prec=400, Emax=10_000, Emin=-10_000)


def parse_quantity(text: str | int) -> Decimal:
    """The exact value of a quantity; raises :class:`QuantityError` naming the text when it is not one."""
    if isinstance(text, bool):
        raise QuantityError(f"quantity {text!r}: a boolean is not a quantity")
    if isinstance(text, int):
        return Decimal(text)
    if not isinstance(text, str):
        raise QuantityError(f"quantity {text!r}: expected a string or an integer, got {type(text).__name__}")
    match = _QUANTITY.match(text.strip()) if len(text) <= 128 else None
    if not match:
        raise QuantityError(f"quantity {text!r}: not a Kubernetes quantity (examples: 3000, 3Gi, 500m, 1e3)")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only valid decimals
        raise QuantityError(f"quantity {text!r}: {exc}") from None
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return _EXACT.multiply(number, _BINARY[suffix])
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix], _EXACT)
    exponent = int(suffix[1:])
    if abs(exponent) > _MAX_EXPONENT:
        raise QuantityError(f"quantity {text!r}: exponent {exponent} is out of range")
    return number.scaleb(exponent, _EXACT)


def parse_count(text: str | int, name: str = "quantity") -> int:
    """A whole, non-negative number (device counts, MiB, percentages); the error names ``name``."""
    try:
        value = parse_quantity(text)
    except QuantityError as exc:
        raise QuantityError(f"{name}: {exc}") from None
    if value != value.to_integral_value():
        raise QuantityError(f"{name}={text!r}: must be a whole number")
    if value < 0:
        raise QuantityError(f"{name}={text!r}: must not be negative")
    return int(value)


def format_quantity(value: Decimal | int) -> str:
    """A canonical quantity string that :func:`parse_quantity` reads back to exactly ``value``."""
    value = Decimal(value)
    if value == value.to_integral_value(context=_EXACT):
        return str(int(value))
    sign, digits, exponent = value.as_tuple()
    text = "".join(map(str, digits))
    stripped = text.rstrip("0")
    exponent = int(exponent) + len(text) - len(stripped)
    return f"{'-' if sign else ''}{stripped}e{exponent}"
