"""The Celery processes: `worker` computes summaries (compute, fold, sweep, provisional calls' expiry),
`callbacks` delivers their StatusCallbacks; every task derives from worker/tasks.py Task."""
