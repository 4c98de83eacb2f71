"""The final pass: a meeting's whole recording transcribed in one long-form call, once it ended.

`python -m functions.finalizer` runs one pass (a child process on one machine, a Kubernetes Job
in a cluster: the worker launches it through the orchestrator, functions/worker/finals.py). Its
configuration is its environment: the settings it reads (FINAL_ENGINE, FINAL_MODEL, the database,
the recording storage), plus the meeting (VEXA_MEETING_PK) and the attempt's name (VEXA_FINAL_JOB).
"""
