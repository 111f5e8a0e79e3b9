"""The baseline for creates per second: a WSGI app that reads the body and answers 201 with a small
JSON body, under the same gunicorn and load generator as the API, doing no work of its own."""

BODY = b'{"sid":"FS00000000000000000000000000000000","status":"queued"}'


def application(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    environ["wsgi.input"].read(length)
    start_response("201 Created", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]
