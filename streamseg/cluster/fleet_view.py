"""The dashboard of ``streamseg fleet --serve``: every source of every worker on the driver's one server.

It is the live view's server (:class:`~streamseg.serve.server.LiveServer`: the same page, routes, token,
Host check and connection limits) showing :class:`RelayedFrames`: sources named by their fleet names
(``?source=NAME``) and frames relayed from the workers: a watched source's newest frame is fetched from its worker
at most ``fps`` times a second, scaled down, and shared by all of its viewers; a source nobody
watches costs nothing. ``/stats``, ``/metrics`` (with a ``worker`` label) and ``/healthz`` read the
driver's fleet snapshot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from streamseg.pipeline.stats import Snapshot
from streamseg.serve.server import LiveServer


class _Relay:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jpeg: bytes | None = None
        self.seq = 0
        self.fetched_at = -1e9
        self.fetches = 0


class RelayedFrames:
    """The dashboard's :class:`~streamseg.serve.pictures.Pictures`. ``fetch(name)``: the newest JPEG of source
    ``name`` from the worker running it (``None``: none now); at most ``fps`` fetches a second per source."""

    def __init__(self, names: Sequence[str], fetch: Callable[[str], bytes | None], *, fps: float = 5.0) -> None:
        self.names = list(names)
        self._fetch = fetch
        self._interval = 1.0 / fps
        self._relays = {name: _Relay() for name in self.names}
        self.closing = False

    def wake(self) -> None:
        self.closing = True

    def source_keys(self) -> list[str]:
        return list(self.names)

    def resolve_source(self, text: str | None) -> str | None:
        if text is None:
            return self.names[0] if self.names else None
        if text in self._relays:
            return text
        return self.names[int(text)] if text.isdigit() and int(text) < len(self.names) else None

    @property
    def fetches(self) -> int:
        """Frames fetched from workers so far (all sources)."""
        return sum(r.fetches for r in self._relays.values())

    def _poll(self, name: str) -> tuple[_Relay, float]:
        """Fetch ``name``'s frame if the last fetch is older than the interval; the relay and the seconds until the
        next fetch is due."""
        relay = self._relays[name]
        with relay.lock:  # one fetch at a time per source: its viewers share it
            now = time.monotonic()
            if now - relay.fetched_at >= self._interval:
                relay.fetched_at = now
                relay.fetches += 1
                try:
                    jpeg = self._fetch(name)
                except Exception:  # noqa: BLE001 - a worker that is gone shows no new frame, the page goes on
                    jpeg = None
                if jpeg is not None and jpeg != relay.jpeg:
                    relay.jpeg, relay.seq = jpeg, relay.seq + 1
            return relay, relay.fetched_at + self._interval - time.monotonic()

    def next_jpeg(self, after: int, timeout: float = 1.0, source: str | None = None) -> tuple[int, bytes | None]:
        name = source if source is not None else self.resolve_source(None)
        deadline = time.monotonic() + timeout
        while not self.closing and name is not None:
            relay, wait = self._poll(name)
            if relay.seq > after:
                return relay.seq, relay.jpeg
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(max(0.01, min(wait, left)))
        return after, None

    def latest_jpeg(self, source: str | None = None, timeout: float = 5.0) -> bytes | None:
        name = source if source is not None else self.resolve_source(None)
        deadline = time.monotonic() + timeout
        while not self.closing and name is not None:
            relay, wait = self._poll(name)
            if relay.jpeg is not None or time.monotonic() >= deadline:
                return relay.jpeg
            time.sleep(max(0.01, min(wait, deadline - time.monotonic())))
        return None



class FleetView(LiveServer):
    """The dashboard: a :class:`~streamseg.serve.server.LiveServer` of :class:`RelayedFrames`."""

    def __init__(self, address: str, *, names: Sequence[str], stats: Callable[[], Snapshot],
                 fetch: Callable[[str], bytes | None], fps: float = 5.0, token: str | None = None,
                 hosts: tuple[str, ...] = ()) -> None:
        self.relayed = RelayedFrames(names, fetch, fps=fps)
        super().__init__(address, self.relayed, token=token, stats=stats, hosts=hosts)

    @property
    def fetches(self) -> int:
        """Frames fetched from workers so far (all sources)."""
        return self.relayed.fetches
