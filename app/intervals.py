"""Smart-polling advice: how long a client should wait before its next check."""
import random


def advise_interval(last_change_at, now, app):
    """Seconds until the next smart poll, for ``X-Poll-Interval``.

    Short right after a change (the user is active, more may follow), growing
    with the time the user's state has been quiet, and longer when this worker
    is loaded, so clients back off before the caps turn them away.
    """
    config = app.config
    low, high = config["POLL_INTERVAL_MIN"], config["POLL_INTERVAL_MAX"]
    if last_change_at is None:
        interval = high
    else:
        quiet = max(0.0, (now - last_change_at).total_seconds())
        # About a tenth of the quiet time: 2 s in the first minute after a
        # change, 30 s after five quiet minutes, the maximum after twenty.
        interval = min(high, max(low, quiet / 10))
    hub = app.extensions.get("hub")
    load = hub.waiting_polls / hub.max_waiting if hub and hub.max_waiting else 0.0
    if load >= 0.8:
        interval *= 4
    elif load >= 0.5:
        interval *= 2
    return int(round(min(interval, high * 4)))


def jittered_wait(timeout):
    """The wait actually used for a long poll: up to 10% (at most 3 s) shorter.

    Clients that reconnected together then drift apart instead of arriving in
    lockstep at every timeout.
    """
    if timeout <= 0:
        return 0.0
    return timeout - random.uniform(0, min(3.0, timeout * 0.1))
