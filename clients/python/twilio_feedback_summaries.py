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

Requests go through `client.api.v2010`, the Version object of the client's Api domain, exactly as
the library's own resources do: the URL is built from `client.api.base_url` when each request is
made, the client's `http_client` sends it (with the client's credentials, edge and region), and an
error answer becomes the `TwilioRestException` that version of the library raises.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Dict, List, Optional, Union

from twilio.base import deserialize, serialize, values
from twilio.base.instance_context import InstanceContext
from twilio.base.instance_resource import InstanceResource
from twilio.base.list_resource import ListResource
from twilio.base.version import Version

__all__ = ["feedback_summaries", "FeedbackSummaryList", "FeedbackSummaryContext", "FeedbackSummaryInstance"]
__version__ = "0.1.0"


def feedback_summaries(client: Any, account_sid: Optional[str] = None) -> "FeedbackSummaryList":
    """The resource of `client` (twilio 8.x or 9.x), for `account_sid` (default: the client's account,
    as `client.calls.feedback_summaries` in twilio 8.13.0)."""
    return FeedbackSummaryList(client.api.v2010, account_sid or client.account_sid)


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
