"""Calls that summaries count: the provisional ones (known from a feedback post before Twilio told
us of the call), listed and removed by operators, expired by the workers."""
