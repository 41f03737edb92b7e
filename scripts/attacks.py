#!/usr/bin/env python3
"""Replays the hostile-client measurements of issue 8 against a running `tidings serve`.

Every attack targets 127.0.0.1 only, is bounded in count and time, and stops by itself.
Standard library only. Prints one line per measurement.

    tidings serve --db /tmp/probe.db &            # the hub under test, release build
    scripts/attacks.py --hub http://127.0.0.1:3000 --db /tmp/probe.db --pid $! --token T

`--token` is a publisher token (`tidings token --jwt-key KEY --publish '*'`), needed for the
non-reading-subscriber attack (it publishes large updates) and the reused-id check.
"""

import argparse
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

HUB_PATH = "/.well-known/mercure"


def metric(hub, name):
    with urllib.request.urlopen(f"{hub}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return 0.0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def get(hub, query, timeout=10):
    """A GET of the hub path that reads only the status line and up to 1 KiB of body."""
    host, port = urllib.parse.urlsplit(hub).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(f"GET {HUB_PATH}?{query} HTTP/1.1\r\nHost: hub\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        if status != 200 and b"content-length" in head.lower():
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(body) < min(length, 1024):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                body += chunk
        return status, body.decode(errors="replace").strip()


def publish(hub, token, form):
    request = urllib.request.Request(
        hub + HUB_PATH,
        data=urllib.parse.urlencode(form).encode(),
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def churn(args):
    topics = "&".join(f"topic=/churn/{n}/{{x}}" if n % 2 else f"topic=/churn/{n}" for n in range(100))
    appends = metric(args.hub, "tidings_log_appends_total")
    size = os.path.getsize(args.db) if args.db else 0
    start = time.monotonic()
    for _ in range(args.churn):
        status, _ = get(args.hub, topics)
        assert status == 200, status
    took = time.monotonic() - start
    print(
        f"churn: {args.churn} anonymous subscribe+close of 100 topics in {took:.1f} s "
        f"({args.churn / took:.0f}/s): history appends +{metric(args.hub, 'tidings_log_appends_total') - appends:.0f}, "
        f"history file {size} -> {os.path.getsize(args.db) if args.db else 0} bytes"
    )


def selectors(args):
    templates = "&".join(f"topic=/t{n}/{{v:256}}" for n in range(100))
    print(f"selectors: 100 x /tN/{{v:256}} ({len(templates)} bytes) -> {get(args.hub, templates)}")
    print(f"selectors: one 60,000-byte selector -> {get(args.hub, 'topic=' + 'a' * 60000)}")
    if args.pid:
        before = rss_kib(args.pid)
        # The costliest templates the limits accept, all distinct: compiled, cached, evicted.
        for round_ in range(200):
            query = "&".join(f"topic=/r{round_}/{n}/{{v:64}}" for n in range(16))
            get(args.hub, query)
        print(
            f"selectors: 200 subscriptions of 16 new {{v:64}} templates each: RSS {before} -> "
            f"{rss_kib(args.pid)} KiB, template cache {metric(args.hub, 'tidings_template_cache_bytes'):.0f} bytes"
        )


def slowloris(args):
    host, port = urllib.parse.urlsplit(args.hub).netloc.split(":")
    socks = []
    for _ in range(args.slowloris):
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock.sendall(b"GET / HTTP/1.1\r\n")
        sock.setblocking(False)
        socks.append(sock)
    start = time.monotonic()
    closed_at = {}
    while time.monotonic() - start < args.slowloris_for and len(closed_at) < len(socks):
        for i, sock in enumerate(socks):
            if i in closed_at:
                continue
            try:
                sock.send(b"X")
                if sock.recv(1024) == b"":
                    closed_at[i] = time.monotonic() - start
            except BlockingIOError:
                pass
            except OSError:
                closed_at[i] = time.monotonic() - start
        time.sleep(1)
    for sock in socks:
        sock.close()
    times = sorted(closed_at.values())
    print(
        f"slowloris: {len(socks)} connections sending a byte a second: {len(times)} closed by the hub "
        f"within {args.slowloris_for} s" + (f" (first {times[0]:.1f} s, last {times[-1]:.1f} s)" if times else "")
    )


def non_reader(args):
    host, port = urllib.parse.urlsplit(args.hub).netloc.split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET {HUB_PATH}?topic=/big HTTP/1.1\r\nHost: hub\r\n\r\n".encode())
    time.sleep(0.5)
    before = rss_kib(args.pid) if args.pid else 0
    data = "x" * (256 * 1024)
    for _ in range(40):
        publish(args.hub, args.token, {"topic": "/big", "data": data})
    start = time.monotonic()
    while metric(args.hub, "tidings_connections") > 0 and time.monotonic() - start < 120:
        time.sleep(0.5)
    took = time.monotonic() - start
    write_timeouts = metric(args.hub, 'tidings_timeouts_total{kind="write"}')
    slow = metric(args.hub, "tidings_slow_subscriber_disconnects_total")
    print(
        f"non-reader: subscriber that never reads, 40 x 256 KiB published: dropped {took:.1f} s after "
        f"the last publish; write timeouts {write_timeouts:.0f}, slow disconnects {slow:.0f}; "
        f"RSS {before} -> {rss_kib(args.pid) if args.pid else 0} KiB"
    )
    sock.close()


def reused_id(args):
    first = publish(args.hub, args.token, {"topic": "/r", "data": "1", "id": "same-id"})
    second = publish(args.hub, args.token, {"topic": "/r", "data": "2", "id": "same-id"})
    print(f"reused id: first publish {first}, second {second}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", default="http://127.0.0.1:3000")
    parser.add_argument("--db", help="the hub's history file, to watch its size")
    parser.add_argument("--pid", type=int, help="the hub's process, to read its RSS")
    parser.add_argument("--token", help="a publisher token")
    parser.add_argument("--churn", type=int, default=2000)
    parser.add_argument("--slowloris", type=int, default=300)
    parser.add_argument("--slowloris-for", type=int, default=20)
    args = parser.parse_args()
    host = urllib.parse.urlsplit(args.hub).hostname
    if not host.startswith("127."):
        raise SystemExit("attacks.py targets 127.0.0.0/8 only")
    churn(args)
    selectors(args)
    slowloris(args)
    if args.token:
        reused_id(args)
        non_reader(args)


if __name__ == "__main__":
    main()
