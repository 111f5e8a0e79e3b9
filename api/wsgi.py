"""The WSGI entry point: `gunicorn api.wsgi:application`."""

from api.factory import create_app

application = create_app()
