"""`make bench`: Vexa measured on this machine, part by part, beside a peer (docs/benchmarks.md).

One module per measurement (engines, pipeline, api_load, peer, cost), the meetings they replay
(meetings, sample), the stack they run on (stack), and the document they fill in (report).
"""
