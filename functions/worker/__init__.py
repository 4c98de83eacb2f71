"""The Celery worker: everything that launches, stops and watches bots.

Run with `celery -A functions.worker.app:celery_app worker` and exactly one
`celery -A functions.worker.app:celery_app beat`, which schedules the reconciler
(reconciler.py) every RECONCILE_SECONDS. The launch and stop tasks (tasks.py) retry through
brief outages; launching.py builds each bot's spec and hands it to the orchestrator
(orchestrator/: local processes or Kubernetes Jobs), which only the worker calls.
"""
