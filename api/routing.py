"""A small router: path templates with {Name} segments; tells 404 from 405 and lists what is allowed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from api.errors import MethodNotAllowed, NotFound

Handler = Callable[..., object]


@dataclass(frozen=True)
class Route:
    template: str
    pattern: re.Pattern
    handlers: dict[str, Handler]
    authenticated: bool


def _compile(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts))
    return re.compile(regex)


class Router:
    def __init__(self) -> None:
        self._routes: list[Route] = []

    def add(self, template: str, *, authenticated: bool = True, **handlers: Handler) -> None:
        """add("/x/{Sid}.json", GET=fetch, DELETE=delete)"""
        self._routes.append(Route(template, _compile(template), dict(handlers), authenticated))

    def match(self, method: str, path: str) -> tuple[Route, Handler, dict[str, str]]:
        for route in self._routes:
            found = route.pattern.fullmatch(path)
            if found is None:
                continue
            # HEAD wherever GET is (RFC 9110): the same handler; the app sends no body.
            handler = route.handlers.get("GET" if method == "HEAD" else method)
            if handler is None:
                raise MethodNotAllowed([*route.handlers, *(["HEAD"] if "GET" in route.handlers else [])])
            return route, handler, found.groupdict()
        raise NotFound(path)
