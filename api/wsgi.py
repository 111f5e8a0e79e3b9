"""The WSGI entry point: `gunicorn -c python:api.gunicorn_conf api.wsgi:application`."""

from api.factory import create_app
from shared.platform.config import check_or_exit

# Also here, for a server started without our gunicorn configuration (which checks in its master):
# a bad setting is one line, not a worker boot traceback.
check_or_exit("web")
application = create_app()
