"""Polling helper the tests share."""
import time


def wait_for(predicate, timeout: float = 10.0, poll: float = 0.02) -> bool:
    """Whether ``predicate()`` became true within ``timeout`` seconds (checked every ``poll``)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())
