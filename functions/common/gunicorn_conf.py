"""gunicorn settings shared by every service (`gunicorn -c python:functions.common.gunicorn_conf`).

Per-service process counts come from the command line or WEB_CONCURRENCY;
the port from PORT, as Knative sets it.
"""
import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8080')}"
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
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


def child_exit(server, worker):
    # Let prometheus_client forget a dead worker's live gauges.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
