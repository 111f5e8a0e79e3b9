"""gunicorn settings for the console (`gunicorn -c python:console.gunicorn_conf console.wsgi:application`).

Threads, not gevent: a page is a few short queries, and a bulk redelivery streams its progress for as
long as it takes (the gthread worker keeps telling the master it lives, so gunicorn's timeout never
cuts it). The console listens where only operators reach it (loopback, or behind their proxy), not
on the public API's port.
"""

from console.checks import check_console_settings
from shared.platform import logs
from shared.platform.config import check_or_exit, get_settings

check_console_settings(check_or_exit("console"))

worker_class = "gthread"
threads = 8
# The request line and headers of a page, and nothing unusual: the console's own limits answer first.
limit_request_line = 8190
keepalive = 5
logconfig_dict = logs.gunicorn_logconfig("INFO", get_settings().log_format)
# One control socket path per user (gunicorn 27): `web` and `console` on one machine would share it;
# neither uses it (as api/gunicorn_conf.py).
control_socket_disable = True
