"""How values are written and read: rounding, percentages, dates, booleans, SIDs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from shared.accounts.sids import ACCOUNT, CALL, SUMMARY, is_sid, new_auth_token, new_sid
from shared.formats import parse_bool, percentage, rfc2822, round4


@pytest.mark.parametrize("value, expected", [
    (Decimal("3.14145"), Decimal("3.1414")), (Decimal("3.14155"), Decimal("3.1416")), (Decimal("2"), Decimal("2.0000")),
])
def test_round4_is_half_even(value, expected):
    assert round4(value) == expected



@pytest.mark.parametrize("count, total, expected", [
    (1, 225, "0.44%"), (1, 8, "12.50%"), (1, 800, "0.12%"), (3, 800, "0.38%"), (5, 5, "100.00%"), (0, 0, "0.00%"),
    (1, 0, "0.00%"),
])
def test_percentage_is_half_even_with_two_places(count, total, expected):
    assert percentage(count, total) == expected



def test_rfc2822_is_utc_without_microseconds():
    moment = dt.datetime(2010, 8, 31, 22, 36, 28, 999, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert rfc2822(moment) == "Tue, 31 Aug 2010 20:36:28 +0000"



def test_parse_bool_accepts_any_case_only():
    assert (parse_bool("True"), parse_bool(" false "), parse_bool("yes"), parse_bool("1")) == (True, False, None, None)



def test_sids_have_a_prefix_and_32_lowercase_hex_digits():
    for prefix in (ACCOUNT, CALL, SUMMARY):
        sid = new_sid(prefix)
        assert is_sid(sid, prefix) and len(sid) == 34
    assert not is_sid("AC" + "A" * 32, ACCOUNT) and not is_sid("CA" + "0" * 32, ACCOUNT)
    assert len(new_auth_token()) == 32
