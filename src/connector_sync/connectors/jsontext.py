"""Reading JSON text fast: orjson wherever it reads a text as the json module does.

orjson parses several times faster than json, but not always to the same values: it
refuses NaN, Infinity and lone surrogates (json reads them, and the sync then names the
record that holds one), and it reads an integer past 64 bits as a float, losing digits.
So a text goes to orjson only when no run of 19 digits in it may be such an integer, and
whatever orjson refuses goes to json, whose answer (or error) stands.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# What JSON allows right before the digits of an integer (or of a fraction or exponent:
# counted too, to be sure). A run after anything else (a quote, a letter: a uuid, an id
# in a string) is inside a string, or the text is not JSON (and orjson refuses it).
_BEFORE_NUMBER_DIGITS = b"-+.eE:,[ \t\r\n"
# Every digit becomes "1", every byte that may come right before a number's digits "2",
# every other byte "0": then a long run where a number may be is one find().
_DIGIT_MAP = bytes(
    0x31 if 0x30 <= b <= 0x39 else 0x32 if b in _BEFORE_NUMBER_DIGITS else 0x30 for b in range(256)
)
# 19 digits may already pass 2**63; shorter integers orjson reads exactly.
_LONG_DIGITS = b"1" * 19


def has_long_digits(data: bytes | bytearray) -> bool:
    """Whether `data` holds 19 or more digits in a row where a number's digits may be
    (digits in a string after a quote or a letter do not count)."""
    mapped = data.translate(_DIGIT_MAP)
    return mapped.startswith(_LONG_DIGITS) or mapped.find(b"2" + _LONG_DIGITS) >= 0


def loads(data: bytes | bytearray) -> Any:
    """`json.loads(data)`, through orjson when it gives the same value.

    Raises:
        json.JSONDecodeError, UnicodeDecodeError: as json.loads does.
    """
    if not has_long_digits(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)
