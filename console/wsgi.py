"""The console's WSGI entry point: `gunicorn -c python:console.gunicorn_conf console.wsgi:application`."""

from console.app import Console
from console.checks import check_console_settings
from shared.platform.config import check_or_exit

settings = check_or_exit("console")
check_console_settings(settings)
application = Console(settings)
