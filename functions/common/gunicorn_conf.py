"""gunicorn settings shared by every service (`gunicorn -c python:functions.common.gunicorn_conf`).

Per-service process counts come from the command line or WEB_CONCURRENCY;
the port from PORT, as Knative sets it, and a second one for /metrics from METRICS_PORT.
"""
import os
import signal
import sys
import threading

from functions.common.gunicorn_workers import with_json_errors
from functions.common.web import SHUTDOWN_HOOKS

_host = os.environ.get("HOST", "0.0.0.0")
bind = [f"{_host}:{os.environ.get('PORT', '8080')}"]
if os.environ.get("METRICS_PORT"):
    # /metrics on a port of its own (functions/common/web.py), one Knative's queue-proxy never
    # forwards to: Prometheus scrapes the pod there; the internet cannot reach it.
    bind.append(f"{_host}:{int(os.environ['METRICS_PORT'])}")
# gthread for request/response services; the gateway runs gevent (--worker-class), for its streams.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "2000"))  # gevent: connections per worker
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))  # a transcription may take a while on CPU
graceful_timeout = 30
keepalive = 5
control_socket_disable = True  # several gunicorns share a machine in the embedded stack
accesslog = "-"
errorlog = "-"
# Every line JSON, tagged with the service name (K_SERVICE, as Knative sets it).
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "functions.common.logs.JsonFormatter", "service": os.environ.get("K_SERVICE", "vexa")},
    },
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


def on_starting(server):
    # gunicorn's own refusals (a header too large, a malformed request) as JSON errors, whatever
    # --worker-class names (functions/common/gunicorn_workers.py). Again after a reload (SIGHUP),
    # which picks the worker class afresh.
    server.worker_class = with_json_errors(server.worker_class)


on_reload = on_starting


def child_exit(server, worker):
    # Let prometheus_client forget a dead worker's live gauges.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    # On SIGTERM, run the app's shutdown hooks (functions/common/web.py on_shutdown) beside
    # gunicorn's own handling, which then waits up to graceful_timeout for requests to end.
    stop_worker = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        for hook in SHUTDOWN_HOOKS:
            _start_soon(hook)  # not inside the signal handler
        stop_worker(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def _start_soon(hook):
    """Run `hook` outside the signal handler: a greenlet under gevent (whose signal handlers run in
    the event loop, where starting a thread would block), a thread otherwise."""
    if "gevent" in sys.modules:
        from gevent import monkey

        if monkey.is_module_patched("threading"):
            import gevent

            gevent.spawn(hook)
            return
    threading.Thread(target=hook, daemon=True).start()
