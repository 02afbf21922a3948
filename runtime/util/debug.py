"""``log_once``: a message logged once per key in this process (Ray's ``ray.util.debug``)."""

import time

_PERIOD_S = 60.0  # with periodic logging on, every key may log again after this long

_logged: set[str] = set()
_disabled = False
_periodic = False
_last_logged = 0.0


def log_once(key: str) -> bool:
    """True on the first call for ``key`` in this process, False after it.

    With :func:`enable_periodic_logging`, the keys are forgotten once a minute has
    passed since one last logged; after :func:`disable_log_once_globally`, always False.
    """
    global _last_logged
    if _disabled:
        return False
    if key not in _logged:
        _logged.add(key)
        _last_logged = time.monotonic()
        return True
    if _periodic and time.monotonic() - _last_logged > _PERIOD_S:
        _logged.clear()
        _last_logged = time.monotonic()
    return False


def enable_periodic_logging() -> None:
    """Lets every key log again once a minute has passed without a first log."""
    global _periodic
    _periodic = True


def disable_log_once_globally() -> None:
    """Makes :func:`log_once` return False from now on, in this process."""
    global _disabled
    _disabled = True


def reset_log_once(key: str | None = None) -> None:
    """Forgets ``key`` (every key if None): its next :func:`log_once` is True again."""
    if key is None:
        _logged.clear()
    else:
        _logged.discard(key)
