#!/usr/bin/env python3
"""Slow clients for the test suite: opens N connections to HOST:PORT from 127.0.0.2..9
(so the per-address cap is not what stops them), half stalling mid-headers and half
mid-body, prints {"opened": n} once they are all open, then waits for stdin to close and
prints {"opened": n, "closed": k}: how many the server has closed by then."""
import json
import resource
import socket
import sys

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 256)), hard))
socks = []
for i in range(n):
    src = f"127.0.0.{2 + i % 8}"
    try:
        s = socket.create_connection((host, port), timeout=5, source_address=(src, 0))
    except OSError as e:
        print(f"connect {i}: {e}", file=sys.stderr)
        continue
    if i % 2 == 0:
        s.sendall(b"POST /v1/topics/t/records HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
    else:
        s.sendall(b"POST /v1/topics/t/records HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"recor")
    socks.append(s)
print(json.dumps({"opened": len(socks)}), flush=True)
sys.stdin.read()
closed = 0
for s in socks:
    s.setblocking(False)
    try:
        data = s.recv(65536)
        # EOF, or a reply (408) and then EOF: the server gave up on this connection.
        if data == b"" or data.startswith(b"HTTP/1.1 408"):
            closed += 1
    except BlockingIOError:
        continue  # still open, nothing sent
    except (ConnectionResetError, BrokenPipeError):
        closed += 1
print(json.dumps({"opened": len(socks), "closed": closed}), flush=True)
