"""Query-string parameters are percent-decoded exactly once, as Go's ``url.ParseQuery`` does.

Issue #20: kvd read aiohttp's already-decoded ``query_string`` and decoded it again, so
``?value=50%25`` was refused as a bad escape and ``?value=a%2541`` was stored as ``aA``.
The expected answers below are what etcd 3.4.23 (``--enable-v2``) gave for the same
requests; the side-by-side run in ``test_kv_conformance.py`` checks the same families
against a live etcd, this test pins them on kvd alone so it runs without etcd.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.process.kv.harness import Server, start_kvd


@pytest.fixture(scope="module")
def kvd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_kvd(tmp_path_factory.mktemp("query"), "127.0.0.67")
    try:
        yield server
    finally:
        server.stop()


def _call(server: Server, method: str, target: str, body: bytes | None = None
          ) -> tuple[int, dict[str, str], dict]:
    """Send ``target`` byte for byte (no client-side re-encoding) and parse the answer."""
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        conn.request(method, target, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, dict(resp.getheaders()), json.loads(raw) if raw else {}
    finally:
        conn.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("query", "stored"), [
    ("value=50%25", "50%"),
    ("value=a%2541", "a%41"),
    ("value=%25zz", "%zz"),
    ("value=%2525", "%25"),
    ("value=a+b%2Bc%20d", "a b+c d"),
    ("value=a%26b%3Dc%3Bd", "a&b=c;d"),
    ("value=%FFx", "\ufffdx"),
])
def test_query_value_is_decoded_once(kvd: Server, query: str, stored: str) -> None:
    status, _, body = _call(kvd, "PUT", f"/v2/keys/q?{query}")
    assert status in (200, 201), body
    assert body["node"]["value"] == stored
    # The body form was always right; the same bytes there must give the same value.
    status, _, body = _call(kvd, "PUT", "/v2/keys/b", query.encode())
    assert body["node"]["value"] == stored


@pytest.mark.timeout(60)
def test_every_query_parameter_is_decoded_once(kvd: Server) -> None:
    _call(kvd, "PUT", "/v2/keys/cas?value=50%25")
    # prevValue: a second decoding turned "50%25" into "50%" -> a bad escape (210).
    status, _, body = _call(kvd, "PUT", "/v2/keys/cas?prevValue=50%25&value=next")
    assert (status, body["node"]["value"]) == (200, "next")
    status, _, body = _call(kvd, "DELETE", "/v2/keys/cas?prevValue=next%2525")
    assert (status, body["errorCode"]) == (412, 101)
    # "%2531" is the text "%31", not a number; decoded twice it became "1".
    status, _, body = _call(kvd, "PUT", "/v2/keys/t?ttl=%2531&value=x")
    assert (status, body["errorCode"], body["cause"]) == (400, 202, 'invalid value for "ttl"')
    status, _, body = _call(kvd, "GET", "/v2/keys/t?wait=true&waitIndex=%2531")
    assert (status, body["errorCode"]) == (400, 203)
    status, _, body = _call(kvd, "PUT", "/v2/keys/t?prevExist=%2566alse&value=x")
    assert (status, body["errorCode"]) == (400, 209)


@pytest.mark.timeout(60)
def test_redirect_keeps_the_query_as_sent(kvd: Server) -> None:
    status, headers, _ = _call(kvd, "PUT", "/v2/keys//r?value=a%2541+b")
    assert status == 301
    assert headers["Location"] == "/v2/keys/r?value=a%2541+b"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("form", "cause"), [
    (b"value=%zz&a;b", "invalid semicolon separator in query"),
    (b'value=%"a', 'invalid URL escape "%\\"a"'),
    (b"value=%\xff\xfe", 'invalid URL escape "%\\xff\\xfe"'),
    (b"value=%z\xc3\xa9", 'invalid URL escape "%z\\xc3"'),
    (b"value=%\t", 'invalid URL escape "%\\t"'),
    (b"value=%\xc3\xa9", 'invalid URL escape "%\xe9"'),
])
def test_bad_forms_get_gos_error_text(kvd: Server, form: bytes, cause: str) -> None:
    """Go quotes the bad escape with ``strconv.Quote`` and a ``;`` error replaces others."""
    status, _, body = _call(kvd, "PUT", "/v2/keys/bad", form)
    assert (status, body["errorCode"], body["cause"]) == (400, 210, cause)
