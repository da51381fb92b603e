"""Resource growth under churn: a long live run whose viewers and published stream keep coming and going.

    python -m benchmarks.churn [--minutes 5] [--model sample_media/demo-segformer] [--out benchmarks/results]

One ``streamseg`` process (a subprocess, as users run it) reads a live synthetic camera over TCP, records it,
serves the live view and publishes to ``tcp://``. Around it, for the whole run:

- a viewer connects every second: it opens ``/stream.mjpg``, reads a few pictures and hangs up (every third one
  just drops the connection mid-picture), and asks for ``/stats`` and ``/metrics``;
- the published stream's receiver reads for about 2.5 s, then closes the connection, so the publisher
  reconnects (about 100 times in 5 minutes).

Every 10 s the run's RSS, threads and open file descriptors are read from ``/proc`` (and those of its
publishing child). The goal: each stays within +-5% from the second minute (warm: the model compiled, the
queues and pools full) to the last (medians of each minute's samples). Written to ``results/DATE-churn.json``.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks import save_results, with_machine

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "sample_media" / "demo-segformer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_figures(pid: int) -> dict:
    """RSS (MiB), threads and open descriptors of ``pid``, and the same summed over its children."""
    def one(p: int) -> tuple[float, int, int]:
        status = Path(f"/proc/{p}/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024
        return rss, len(list(Path(f"/proc/{p}/task").iterdir())), len(list(Path(f"/proc/{p}/fd").iterdir()))

    rss, threads, fds = one(pid)
    children = {int(c) for task in Path(f"/proc/{pid}/task").iterdir()  # each thread's own children
                for c in (task / "children").read_text().split()}
    kids = [one(c) for c in children if Path(f"/proc/{c}").exists()]
    return {"rss_mib": round(rss, 1), "threads": threads, "fds": fds, "children": len(kids),
            "children_rss_mib": round(sum(k[0] for k in kids), 1)}


class FlakyReceiver:
    """Accepts the published stream, reads it for ``hold`` seconds, then closes the connection; counts them."""

    def __init__(self, hold: float = 2.5) -> None:
        self.hold, self.connections, self.bytes = hold, 0, 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.settimeout(1.0)
            end = time.monotonic() + self.hold
            try:
                while time.monotonic() < end:
                    data = conn.recv(65536)
                    if not data:
                        break
                    self.bytes += len(data)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self.sock.close()


def viewer(port: int, n: int) -> None:
    """One viewer's visit: a few pictures of the MJPEG stream (or a connection dropped mid-picture), the figures."""
    base = f"http://127.0.0.1:{port}"
    try:
        with urllib.request.urlopen(base + "/stream.mjpg", timeout=5) as r:
            r.read(20_000 if n % 3 else 3_000)  # the third hangs up in the middle of a picture
        urllib.request.urlopen(base + "/stats", timeout=5).read()
        urllib.request.urlopen(base + "/metrics", timeout=5).read()
    except OSError:
        pass


def warm_and_end(samples: list[dict]) -> tuple[dict, dict]:
    """The median of each figure over the second minute (warm) and over the last minute: a viewer's connection
    and thread come and go each second, so single samples of a dozen descriptors move by one or two."""
    import statistics

    def medians(rows: list[dict]) -> dict:
        return {k: statistics.median(r[k] for r in rows) for k in ("rss_mib", "threads", "fds")}

    end_t = samples[-1]["t"]
    warm = [r for r in samples if 60 <= r["t"] < 120] or samples[: max(1, len(samples) // 3)]
    last = [r for r in samples if r["t"] > end_t - 60] or samples[-1:]
    return medians(warm), medians(last)


def run(minutes: float, model: Path, out_dir: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from streamseg.testing.streams import SyntheticStreams

    seconds = minutes * 60
    port = _free_port()
    receiver = FlakyReceiver()
    samples, visits = [], 0
    with tempfile.TemporaryDirectory() as tmp, SyntheticStreams(1, width=320, height=180, fps=15) as cams:
        argv = [sys.executable, "-m", "streamseg", cams.urls[0], "-o", str(Path(tmp) / "rec.mp4"), "-o", receiver.url,
                "--serve", str(port), "--model", str(model), "--duration", f"{seconds + 5:g}",
                "--reconnect-max-delay", "0.5", "--timeout", "3", "-q"]
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        started = time.monotonic()
        next_sample = started + 10
        try:
            while time.monotonic() - started < seconds and proc.poll() is None:
                threading.Thread(target=viewer, args=(port, visits), daemon=True).start()
                visits += 1
                if time.monotonic() >= next_sample:
                    try:
                        figures = proc_figures(proc.pid)
                    except (OSError, StopIteration):
                        break
                    figures["t"] = round(time.monotonic() - started)
                    samples.append(figures)
                    print(json.dumps(figures), flush=True)
                    next_sample += 10
                time.sleep(1.0)
            try:
                stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5).read())
            except OSError:
                stats = {"sources": [{}]}
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=60)
            receiver.close()
    source = stats["sources"][0]
    base, last = warm_and_end(samples)
    growth = {k: round(last[k] / base[k] - 1, 3) if base[k] else 0.0 for k in ("rss_mib", "threads", "fds")}
    results = with_machine({
        "minutes": minutes, "model": str(model), "viewer_visits": visits,
        "publisher_connections": receiver.connections, "publish_reconnects": source.get("publish_reconnects"),
        "publish_failures": source.get("publish_failures"), "frames_written": source.get("frames_written"),
        "frames_dropped": source.get("frames_dropped"), "samples": samples, "warm": base, "end": last,
        "growth_after_first_minute": growth, "goal": "each within +-5%",
        "met": all(abs(g) <= 0.05 for g in growth.values()), "exit_code": proc.returncode,
        "stderr_tail": err.strip().splitlines()[-3:],
    })
    print(f"{visits} viewer visits, {receiver.connections} publisher connections; growth after the first minute: "
          + ", ".join(f"{k} {v:+.1%}" for k, v in growth.items()) + f" (goal +-5%: {'met' if results['met'] else 'NOT met'})")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    results = run(args.minutes, args.model, args.out)
    save_results(results, args.out, f"{time.strftime('%Y-%m-%d')}-churn{'' if args.minutes >= 5 else '-short'}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
