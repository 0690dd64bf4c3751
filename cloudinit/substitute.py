"""``$public_ipv4``-style substitution over the whole user-data text.

The four tokens are replaced by the metadata's addresses (or the ``COREOS_*`` environment
variables, or nothing). A backslash escapes a token: ``\\$private_ipv4`` gives the literal
``$private_ipv4`` and ``\\\\$private_ipv4`` gives ``\\$private_ipv4``, as the original did.
Unknown tokens such as ``$unknown`` are left alone. Unlike the original, two tokens written
back to back are both replaced.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

TOKENS = ("public_ipv4", "private_ipv4", "public_ipv6", "private_ipv6")
_TOKEN = re.compile(r"(\\?)\$(" + "|".join(TOKENS) + r")")


def values_from(metadata: Mapping[str, str], environ: Mapping[str, str] | None = None
                ) -> dict[str, str]:
    """Metadata addresses first, then ``COREOS_PUBLIC_IPV4``-style variables, else ""."""
    environ = os.environ if environ is None else environ
    return {
        token: metadata.get(token) or environ.get(f"COREOS_{token.upper()}", "")
        for token in TOKENS
    }


def substitute(text: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return "$" + match.group(2)
        return values.get(match.group(2), "")

    return _TOKEN.sub(replace, text)
