"""Webhooks: a meeting's feed (functions/meetings/outbox.py) delivered to users' HTTPS endpoints,
signed per the Standard Webhooks specification.

The contract receivers see (event types, payloads, the retry schedule) is functions/common/webhooks.py.

- signing.py: secrets and `webhook-signature`;
- receivers.py: which URLs may receive (public addresses only, checked again at every delivery)
  and the one HTTP request an attempt makes;
- endpoints.py: users' endpoints and their delivery log (the API's and `vexa admin`'s store);
- fanout.py: new feed events become messages, and one delivery per subscribed endpoint;
- delivery.py: an attempt at a delivery, and what follows it (done, retried, given up, disabled).

The worker runs them (functions/worker/webhooks.py): a pump on Celery beat fans out and hands
due deliveries to tasks on their own queue, so a slow receiver never holds up bots or transcripts.
"""
