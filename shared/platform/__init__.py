"""The platform every process stands on: settings, the database engine, Redis and the Celery app,
logging, metrics, heartbeats and the embedded servers."""
