"""The sender's OIDC token for the Broker (Knative Eventing's sender identity), where there is one.

With Knative Eventing's `authentication-oidc` feature enabled, the Broker's ingress takes an event
only with `Authorization: Bearer <token>`, a token issued for the Broker's audience, and answers
401 without one; EventPolicies then decide by the token's subject who may send which types
(https://knative.dev/docs/eventing/features/sender-identity/,
https://knative.dev/docs/eventing/features/authorization/). Vexa's senders read that token from a
file:

- a bot: the worker's `kubernetes` orchestrator projects the bot pod's ServiceAccount token, for
  the audience the Broker announces (status.address.audience), into the bot's Job at /oidc/token
  (functions/worker/orchestrator/job_spec.py); the kubelet renews it before it expires;
- the Celery worker (its public events): the chart projects a ServiceAccount token with the
  Broker's audience into it at the same path when `eventPolicy.enabled` (helm/vexa/templates/worker.yaml);
  the kubelet renews it.

No file (the embedded default, a cluster without OIDC): no header, as before. The file is read
again for every request, since both are rotated in place.

VEXA_OIDC_TOKEN_FILE names another file instead of /oidc/token: for tests, which cannot write
/oidc. Nothing in the chart sets it.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# Where the bot Jobs and the chart's worker get their tokens mounted; Knative's own sources use the same
# path: https://knative.dev/docs/eventing/features/sender-identity/#oidc-token-for-sinkbinding-and-containersource
OIDC_TOKEN_FILE = "/oidc/token"
TOKEN_FILE_VARIABLE = "VEXA_OIDC_TOKEN_FILE"


def token_file(environ: Mapping[str, str] = os.environ) -> Path:
    """The token file this process sends with: VEXA_OIDC_TOKEN_FILE, else /oidc/token."""
    return Path(environ.get(TOKEN_FILE_VARIABLE) or OIDC_TOKEN_FILE)


def bearer_from_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """`{"Authorization": "Bearer <token>"}` with the token now in `path`; {} when there is no such
    file or it is empty (a Secret volume that is being updated is never seen half-written: the
    kubelet swaps the whole directory)."""
    try:
        token = Path(path).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return {}
    return {"Authorization": f"Bearer {token}"} if token else {}
