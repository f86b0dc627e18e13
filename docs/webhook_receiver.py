"""A receiver of the ops webhook, as the README shows it: verify with the Standard Webhooks
reference library, then act once per ``webhook-id`` (retries repeat the id)."""

import os

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

verifier = Webhook(os.environ["NOTIFY_WEBHOOK_SECRET"])  # the same whsec_... as the daemon's
seen: set[str] = set()  # use a store with a TTL of a few minutes in production


def receive(body: bytes, headers: dict[str, str]) -> int:
    """The HTTP status to answer for one POST: 400 if it does not verify (forged, altered or
    older than five minutes), else 200, acting only the first time an id arrives."""
    try:
        event = verifier.verify(body, headers)  # raises on a forged, altered or >5 min old request
    except WebhookVerificationError:
        return 400
    msg_id = {k.lower(): v for k, v in headers.items()}["webhook-id"]
    if msg_id not in seen:
        seen.add(msg_id)
        print(event["event"], event["item_id"], event.get("error_code"))
    return 200
