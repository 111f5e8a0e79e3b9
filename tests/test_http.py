"""The HTTP layer's parts: the router (404 against 405), the body's cap, the form parser."""

from __future__ import annotations

import io

import pytest

from api.errors import BadRequest, MethodNotAllowed, NotFound, PayloadTooLarge
from api.http import parse_form, read_body
from api.routing import Router


def test_router_tells_404_from_405_and_lists_allowed_methods():
    router = Router()
    fetch, delete = object(), object()
    router.add("/A/{Sid}.json", GET=fetch, DELETE=delete)
    route, handler, params = router.match("GET", "/A/FS1.json")
    assert handler is fetch and params == {"Sid": "FS1"}
    with pytest.raises(MethodNotAllowed) as raised:
        router.match("POST", "/A/FS1.json")
    assert dict(raised.value.headers) == {"Allow": "DELETE, GET, HEAD"}
    for path in ("/A/FS1.jsonx", "/A/x/y.json", "/A/.json", "/a/FS1.json"):
        with pytest.raises(NotFound):
            router.match("GET", path)



def test_read_body_honours_the_cap_declared_or_chunked():
    assert read_body({"CONTENT_LENGTH": "3", "wsgi.input": io.BytesIO(b"abcdef")}, 10) == b"abc"
    assert read_body({"CONTENT_LENGTH": "", "wsgi.input": io.BytesIO(b"abc")}, 10) == b""
    with pytest.raises(PayloadTooLarge):
        read_body({"CONTENT_LENGTH": "11", "wsgi.input": None}, 10)
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked"}
    assert read_body({**chunked, "wsgi.input": io.BytesIO(b"x" * 10)}, 10) == b"x" * 10
    with pytest.raises(PayloadTooLarge):
        read_body({**chunked, "wsgi.input": io.BytesIO(b"x" * 11)}, 10)
    for bad in ("-1", "1e3", "abc"):
        with pytest.raises(BadRequest):
            read_body({"CONTENT_LENGTH": bad, "wsgi.input": io.BytesIO()}, 10)



def test_parse_form_keeps_repeats_and_blanks_and_refuses_bad_bytes_or_too_many_fields():
    assert parse_form(b"Issue=a&Issue=b&Empty=&Name=%C3%A9", 10) == {"Issue": ["a", "b"], "Empty": [""],
                                                                      "Name": ["\u00e9"]}
    with pytest.raises(BadRequest, match="UTF-8"):
        parse_form(b"Name=%E9", 10)
    with pytest.raises(BadRequest, match="more than 2"):
        parse_form(b"a=1&b=2&c=3", 2)
