"""The API process (the Procfile's `web`): a plain WSGI app under gunicorn serving Twilio's Call
Feedback and Feedback Summary resources and Twilio's voice status callbacks. It writes through the
owners in shared/ and sends jobs to Redis; it never computes a summary."""
