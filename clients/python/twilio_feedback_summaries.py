"""Twilio's Call Feedback Summary resource for twilio 8.x and 9.x clients.

twilio 8.13.0 was the last release with `client.calls.feedback_summaries`; this module gives any
twilio 8.x or 9.x `Client` the same resource back, built as the library built it (and with the
library's own parts: its request path, its serializers and deserializers, its exceptions):

    from twilio.rest import Client
    from twilio_feedback_summaries import feedback_summaries

    client = Client(account_sid, auth_token)
    client.api.base_url = "https://summaries.example.com"   # where the service runs
    summary = feedback_summaries(client).create(start_date="2024-01-01", end_date="2024-01-31")
    feedback_summaries(client)(summary.sid).fetch().status  # queued, in-progress, completed, failed

Requests take the path the library's own resources take: the URL is built from
`client.api.base_url` when each request is made, the client's `request` adds its headers and
credentials, its `http_client` sends it, and an error answer becomes the `TwilioRestException` that
version of the library raises. With one exception: the client's edge and region (`Client(edge=...,
region=...)`, TWILIO_EDGE and TWILIO_REGION, `client.edge`, `client.region`) do not apply. They name
Twilio's hosts, but the library applies them to any host: this service's `summaries.example.com`
would become `summaries.dublin.ie1.example.com`, and the credentials would go there. The client
itself keeps them, for its requests to Twilio (see `_ServiceVersion`).
"""

from __future__ import annotations

import copy
from datetime import date, datetime
from typing import Any, Dict, List, Optional, Union

from twilio.base import deserialize, serialize, values
from twilio.base.exceptions import TwilioException
from twilio.base.instance_context import InstanceContext
from twilio.base.instance_resource import InstanceResource
from twilio.base.list_resource import ListResource
from twilio.base.version import Version

__all__ = ["feedback_summaries", "FeedbackSummaryList", "FeedbackSummaryContext", "FeedbackSummaryInstance"]
__version__ = "0.1.0"


def feedback_summaries(client: Any, account_sid: Optional[str] = None) -> "FeedbackSummaryList":
    """The resource of `client` (twilio 8.x or 9.x), for `account_sid` (default: the client's account,
    as `client.calls.feedback_summaries` in twilio 8.13.0)."""
    return FeedbackSummaryList(_ServiceVersion(client), account_sid or client.account_sid)


class _ServiceVersion(Version):
    """`client.api.v2010` for this service: the same domain (`client.api`, so the URL starts with its
    `base_url` as it is at each request) and the same request code, the client's, without the
    client's edge and region.

    twilio's `ClientBase.request` (8.13.0 and 9.x alike) passes every URL through `get_hostname`,
    which, once `edge` or `region` is set, rebuilds the host as first label, edge, region and last
    two labels, whatever the host: `http://127.0.0.1:8080` becomes `http://127.ie1.0.1:8080`. The
    client's `edge` comes from `Client(edge=...)`, else TWILIO_EDGE (likewise `region`), so a
    `None` argument does not clear it; and clearing it on the user's client would move that client's
    requests to Twilio too. So each request is made by a shallow copy of the client (its class, its
    credentials, headers and `http_client`) whose `edge` and `region` are `None`."""

    def __init__(self, client: Any):
        super().__init__(client.api, client.api.v2010.version)
        self._client = client

    def request(self, method: str, uri: str, params: Optional[Dict[str, object]] = None,
                data: Optional[Dict[str, object]] = None, headers: Optional[Dict[str, str]] = None,
                auth: Optional[Any] = None, timeout: Optional[float] = None, allow_redirects: bool = False) -> Any:
        url = self.absolute_url(uri)
        unrouted = copy.copy(self._client)
        unrouted.edge = unrouted.region = None
        unrouted.http_client = _SendsOnlyTo(url, self._client.http_client)
        return unrouted.request(method, url, params=params, data=data, headers=headers, auth=auth,
                                timeout=timeout, allow_redirects=allow_redirects)


class _SendsOnlyTo:
    """The client's `http_client`, for one request: refuses to send it to any other URL than the one
    the add-on built (should a twilio release, or a `Client` subclass, rewrite URLs some other way
    than through edge and region), so the credentials go nowhere else."""

    def __init__(self, url: str, http_client: Any):
        self._url = url
        self._http_client = http_client

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if url != self._url:
            raise TwilioException(
                "twilio_feedback_summaries: refusing to send {} {}: the request is for {} (client.api.base_url); "
                "the client changed its URL, and its credentials must go to the service only".format(
                    method, url, self._url))
        return self._http_client.request(method, url, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._http_client, name)


def _boolean(value: Union[bool, str, object]) -> Union[str, object]:
    # twilio's serialize.boolean_to_string ('true'/'false'); in 8.x it does not pass `unset` through.
    return value if value is values.unset else serialize.boolean_to_string(value)


class FeedbackSummaryInstance(InstanceResource):
    """The fields of twilio 8.13.0's FeedbackSummaryInstance, deserialized as it did."""

    class Status(object):
        QUEUED = "queued"
        IN_PROGRESS = "in-progress"
        COMPLETED = "completed"
        FAILED = "failed"

    def __init__(self, version: Version, payload: Dict[str, Any], account_sid: str, sid: Optional[str] = None):
        super().__init__(version)
        self.account_sid: Optional[str] = payload.get("account_sid")
        self.call_count: Optional[int] = deserialize.integer(payload.get("call_count"))
        self.call_feedback_count: Optional[int] = deserialize.integer(payload.get("call_feedback_count"))
        self.date_created: Optional[datetime] = deserialize.rfc2822_datetime(payload.get("date_created"))
        self.date_updated: Optional[datetime] = deserialize.rfc2822_datetime(payload.get("date_updated"))
        self.end_date: Optional[date] = deserialize.iso8601_date(payload.get("end_date"))
        self.include_subaccounts: Optional[bool] = payload.get("include_subaccounts")
        self.issues: Optional[List[Dict[str, object]]] = payload.get("issues")
        self.quality_score_average: Optional[float] = deserialize.decimal(payload.get("quality_score_average"))
        self.quality_score_median: Optional[float] = deserialize.decimal(payload.get("quality_score_median"))
        self.quality_score_standard_deviation: Optional[float] = deserialize.decimal(
            payload.get("quality_score_standard_deviation"))
        self.sid: Optional[str] = payload.get("sid")
        self.start_date: Optional[date] = deserialize.iso8601_date(payload.get("start_date"))
        self.status: Optional[str] = payload.get("status")
        self._solution = {"account_sid": account_sid, "sid": sid or self.sid}
        self._context: Optional[FeedbackSummaryContext] = None

    @property
    def _proxy(self) -> "FeedbackSummaryContext":
        if self._context is None:
            self._context = FeedbackSummaryContext(self._version, **self._solution)
        return self._context

    def fetch(self) -> "FeedbackSummaryInstance":
        return self._proxy.fetch()

    def delete(self) -> bool:
        return self._proxy.delete()

    def __repr__(self) -> str:
        context = " ".join("{}={}".format(k, v) for k, v in self._solution.items())
        return "<Twilio.Api.V2010.FeedbackSummaryInstance {}>".format(context)


class FeedbackSummaryContext(InstanceContext):
    """One summary: `feedback_summaries(client)(sid)`."""

    def __init__(self, version: Version, account_sid: str, sid: str):
        super().__init__(version)
        self._solution = {"account_sid": account_sid, "sid": sid}
        self._uri = "/Accounts/{account_sid}/Calls/FeedbackSummary/{sid}.json".format(**self._solution)

    def fetch(self) -> FeedbackSummaryInstance:
        payload = self._version.fetch(method="GET", uri=self._uri)
        return FeedbackSummaryInstance(self._version, payload, **self._solution)

    def delete(self) -> bool:
        """True once deleted (the service answers 204), as in twilio 8.13.0."""
        return self._version.delete(method="DELETE", uri=self._uri)

    def __repr__(self) -> str:
        context = " ".join("{}={}".format(k, v) for k, v in self._solution.items())
        return "<Twilio.Api.V2010.FeedbackSummaryContext {}>".format(context)


class FeedbackSummaryList(ListResource):
    """The account's summaries: `create(...)`, and `(sid)` or `get(sid)` for one of them."""

    def __init__(self, version: Version, account_sid: str):
        super().__init__(version)
        self._solution = {"account_sid": account_sid}
        self._uri = "/Accounts/{account_sid}/Calls/FeedbackSummary.json".format(**self._solution)

    def create(
        self,
        start_date: Union[date, str],
        end_date: Union[date, str],
        include_subaccounts: Union[bool, object] = values.unset,
        status_callback: Union[str, object] = values.unset,
        status_callback_method: Union[str, object] = values.unset,
        idempotency_key: Union[str, object] = values.unset,
    ) -> FeedbackSummaryInstance:
        """Create a summary. The same `idempotency_key` (sent as the `Idempotency-Key` header) with the
        same parameters within the service's window answers with the original summary."""
        data = values.of({
            "StartDate": serialize.iso8601_date(start_date),
            "EndDate": serialize.iso8601_date(end_date),
            "IncludeSubaccounts": _boolean(include_subaccounts),
            "StatusCallback": status_callback,
            "StatusCallbackMethod": status_callback_method,
        })
        headers = values.of({"Idempotency-Key": idempotency_key})
        payload = self._version.create(method="POST", uri=self._uri, data=data, headers=headers)
        return FeedbackSummaryInstance(self._version, payload, account_sid=self._solution["account_sid"])

    def get(self, sid: str) -> FeedbackSummaryContext:
        return FeedbackSummaryContext(self._version, account_sid=self._solution["account_sid"], sid=sid)

    def __call__(self, sid: str) -> FeedbackSummaryContext:
        return self.get(sid)

    def __repr__(self) -> str:
        return "<Twilio.Api.V2010.FeedbackSummaryList>"
