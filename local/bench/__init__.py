"""`make bench`: Vexa measured on this machine, part by part, beside a peer (docs/benchmarks.md).

One module per measurement (engines, pipeline, api_load, peer, cost); what they replay or seed
(meetings, sample, seed); WhisperLive's protocol as its client speaks it (whisperlive_client);
the stack they run on (stack), process CPU and memory (resources), and the document (report).
"""
