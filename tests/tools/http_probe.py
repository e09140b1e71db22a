#!/usr/bin/env python3
"""http_probe.py: what a hostile client does to an HTTP server, for the
integration tests (tests/integration/test_inference_hostile.sh). Each
command prints one JSON object.

  slowloris PORT --conns N --secs S --body FILE --path P
      N connections trickle a header byte every second for S seconds while a
      normal client POSTs FILE to P once every 0.5 s; reports the normal
      requests' statuses and latencies and when the server closed the
      trickling connections.
  framing PORT
      the request-smuggling and garbage cases, each on a fresh connection:
      every response's status line, and whether and when the server closed.
  concurrent PORT --path P --body FILE --n N
      N POSTs at once; their statuses.
  hold PORT --conns N --secs S [--trickle] [--reopen]
      opens N connections that send part of a request, prints once they are
      open, holds them S seconds and prints how many the server closed
      (--trickle: a header byte a second each; --reopen: a closed one is
      opened again, so N stay open).
  gif-bomb OUT | webp-bomb OUT W H | many-scans IN OUT N
      hostile files: a 35-byte GIF of a 10000x10000 screen; a lossless WebP
      of W x H in a few dozen bytes; a progressive JPEG with its smallest scan
      repeated to N scans.
"""
import argparse
import json
import re
import socket
import struct
import sys
import threading
import time


def connect(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_all(s, deadline):
    """Everything the server sends until it closes or the deadline; and
    whether it closed."""
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return buf, False
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return buf, False
        except ConnectionResetError:
            return buf, True
        if not chunk:
            return buf, True
        buf += chunk


def post(port, path, body, timeout=10.0, headers=""):
    t0 = time.monotonic()
    try:
        s = connect(port, timeout)
        req = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
               "Content-Length: %d\r\nConnection: close\r\n%s\r\n" % (path, len(body), headers))
        s.sendall(req.encode() + body)
        buf, _ = read_all(s, time.monotonic() + timeout)
        s.close()
        line = buf.split(b"\r\n", 1)[0].decode("latin-1")
        status = int(line.split()[1]) if line.startswith("HTTP/") else 0
    except OSError as e:
        status, buf = -1, str(e).encode()
    return status, time.monotonic() - t0, buf


def slowloris(a):
    body = open(a.body, "rb").read()
    conns, closed_at = [], {}
    t0 = time.monotonic()
    for i in range(a.conns):
        try:
            s = connect(a.port)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            s.setblocking(False)
            conns.append(s)
        except OSError:
            pass
    opened = len(conns)
    opened_s = time.monotonic() - t0
    probes = []
    stop = threading.Event()

    def normal():
        while not stop.is_set():
            st, dt, _ = post(a.port, a.path, body)
            probes.append((st, dt))
            time.sleep(0.5)

    th = threading.Thread(target=normal)
    th.start()
    end = time.monotonic() + a.secs
    while time.monotonic() < end:
        for i, s in enumerate(conns):
            if i in closed_at:
                continue
            try:
                if s.recv(4096) == b"":
                    closed_at[i] = time.monotonic() - t0
                    continue
            except BlockingIOError:
                pass
            except OSError:
                closed_at[i] = time.monotonic() - t0
                continue
            try:
                s.send(b"a")
            except BlockingIOError:
                pass
            except OSError:
                closed_at[i] = time.monotonic() - t0
        time.sleep(1.0)
    stop.set()
    th.join()
    for s in conns:
        s.close()
    lat = sorted(d for _, d in probes)
    print(json.dumps({
        "opened": opened, "opened_s": round(opened_s, 3),
        "closed_by_server": len(closed_at),
        "first_close_s": round(min(closed_at.values()), 3) if closed_at else None,
        "last_close_s": round(max(closed_at.values()), 3) if closed_at else None,
        "probes": len(probes), "probe_status": sorted(set(st for st, _ in probes)),
        "probe_max_s": round(lat[-1], 4) if lat else None,
        "probe_p50_s": round(lat[len(lat) // 2], 4) if lat else None,
    }))


SMUG = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
SL = str(len(SMUG)).encode()
FRAMING = {
    # the body starts another request: read as a body, it is one request
    "zeros_length": b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"0" * 63 + SL +
    b"\r\n\r\n" + SMUG,
    "two_lengths": b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
    b"Content-Length: " + SL + b"\r\n\r\n" + SMUG,
    "space_before_colon": b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length : " + SL +
    b"\r\n\r\n" + SMUG,
    "te_and_cl": b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_space": b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"
    b"0\r\n\r\n",
    "chunked": b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    "plus_length": b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
    "no_colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "no_host": b"GET /healthz HTTP/1.1\r\n\r\n",
    "version_1_7": b"GET /healthz HTTP/1.7\r\nHost: x\r\n\r\n",
    "nul_byte": b"GET /healthz\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "bare_lf": b"GET /healthz HTTP/1.1\nHost: x\n\n",
    "tls_hello": bytes.fromhex("160301007a0100007603035f") + b"\x00" * 40,
    "http_0_9": b"GET /healthz\r\n\r\n",
    "garbage": b"GARBAGE\r\n\r\n",
    # HEAD: headers only, and the next request on the connection still works
    "head": b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n"
    b"Connection: close\r\n\r\n",
    "pipelined": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n"
    b"Connection: close\r\n\r\n",
}


def framing(a):
    out = {}
    for name, req in FRAMING.items():
        t0 = time.monotonic()
        try:
            s = connect(a.port)
            s.sendall(req)
            buf, closed = read_all(s, t0 + a.wait)
            s.close()
        except OSError as e:
            buf, closed = str(e).encode(), True
        statuses = [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", buf)]
        out[name] = {"statuses": statuses, "closed": closed,
                     "secs": round(time.monotonic() - t0, 3), "bytes": len(buf),
                     "body_after_head": name == "head" and b"<html" in buf}
    print(json.dumps(out))


def concurrent(a):
    body = open(a.body, "rb").read()
    res = [None] * a.n
    barrier = threading.Barrier(a.n)

    def one(i):
        barrier.wait()
        st, dt, _ = post(a.port, a.path, body, timeout=60)
        res[i] = (st, dt)

    ths = [threading.Thread(target=one, args=(i,)) for i in range(a.n)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    counts = {}
    for st, _ in res:
        counts[str(st)] = counts.get(str(st), 0) + 1
    print(json.dumps({"statuses": counts, "max_s": round(max(d for _, d in res), 3)}))


def hold(a):
    """Opens CONNS connections that send half a request; with --trickle they
    send one more header byte a second, with --reopen a connection the
    server closes is opened again, so CONNS stay open for SECS."""
    def opened():
        try:
            s = connect(a.port)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            s.setblocking(False)
            return s
        except OSError:
            return None
    conns = [opened() for _ in range(a.conns)]
    print(json.dumps({"held": sum(1 for s in conns if s)}), flush=True)
    end = time.monotonic() + a.secs
    closed, reopened = 0, 0
    while time.monotonic() < end:
        for i, s in enumerate(conns):
            if s is None:
                continue
            gone = False
            try:
                if s.recv(4096) == b"":
                    gone = True
            except BlockingIOError:
                pass
            except OSError:
                gone = True
            if not gone and a.trickle:
                try:
                    s.send(b"a")
                except BlockingIOError:
                    pass
                except OSError:
                    gone = True
            if gone:
                closed += 1
                s.close()
                conns[i] = opened() if a.reopen else None
                reopened += 1 if a.reopen and conns[i] else 0
        if not a.reopen and all(s is None for s in conns):
            break
        time.sleep(1.0 if a.trickle else 0.2)
    for s in conns:
        if s:
            s.close()
    print(json.dumps({"closed_by_server": closed, "reopened": reopened}), flush=True)


def gif_bomb(a):
    gif = (b"GIF89a" + struct.pack("<HH", 10000, 10000) + b"\x80\x00\x00" +
           b"\x00\x00\x00\xff\xff\xff" + b"\x2c" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00" +
           b"\x02\x02\x44\x01\x00" + b"\x3b")
    assert len(gif) == 35
    open(a.out, "wb").write(gif)


class Bits:
    def __init__(self):
        self.v, self.n = 0, 0

    def put(self, value, nbits):  # least significant bit first, as VP8L reads
        self.v |= value << self.n
        self.n += nbits

    def bytes(self):
        return self.v.to_bytes((self.n + 7) // 8, "little")


def webp_bomb(a):
    """A lossless WebP of W x H: no transform, no color cache, one group of
    five single-symbol prefix codes, so every pixel costs zero bits."""
    b = Bits()
    b.put(0x2F, 8)
    b.put(a.w - 1, 14)
    b.put(a.h - 1, 14)
    b.put(0, 1)  # alpha unused
    b.put(0, 3)  # version
    b.put(0, 1)  # no transform
    b.put(0, 1)  # no color cache
    b.put(0, 1)  # no meta prefix codes
    for _ in range(5):  # green, red, blue, alpha, distance: a simple code of one 1-bit symbol, 0
        b.put(1, 1)
        b.put(0, 1)
        b.put(0, 1)
        b.put(0, 1)
    data = b.bytes()
    if len(data) % 2:
        data += b"\x00"
    chunk = b"VP8L" + struct.pack("<I", len(data)) + data
    open(a.out, "wb").write(b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk)


def many_scans(a):
    d = open(a.inp, "rb").read()
    sos = [i for i in range(2, len(d) - 1) if d[i] == 0xFF and d[i + 1] == 0xDA]
    if not sos or not d.endswith(b"\xff\xd9"):
        sys.exit("many-scans: not a JPEG with scans")
    # the smallest scan (SOS to the next scan), repeated: a few bytes each,
    # and each a pass over every block of the image
    bounds = sos + [len(d) - 2]
    scans = [d[bounds[i]:bounds[i + 1]] for i in range(len(sos))]
    small = min(scans, key=len)
    out = d[:-2] + small * max(0, a.n - len(sos)) + b"\xff\xd9"
    open(a.out, "wb").write(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("slowloris")
    s.add_argument("port", type=int)
    s.add_argument("--conns", type=int, default=1000)
    s.add_argument("--secs", type=float, default=10)
    s.add_argument("--body", required=True)
    s.add_argument("--path", default="/v1/classify")
    s.set_defaults(fn=slowloris)
    s = sub.add_parser("framing")
    s.add_argument("port", type=int)
    s.add_argument("--wait", type=float, default=3.0)
    s.set_defaults(fn=framing)
    s = sub.add_parser("concurrent")
    s.add_argument("port", type=int)
    s.add_argument("--path", default="/v1/classify")
    s.add_argument("--body", required=True)
    s.add_argument("--n", type=int, default=8)
    s.set_defaults(fn=concurrent)
    s = sub.add_parser("hold")
    s.add_argument("port", type=int)
    s.add_argument("--conns", type=int, default=100)
    s.add_argument("--secs", type=float, default=30)
    s.add_argument("--trickle", action="store_true")
    s.add_argument("--reopen", action="store_true")
    s.set_defaults(fn=hold)
    s = sub.add_parser("gif-bomb")
    s.add_argument("out")
    s.set_defaults(fn=gif_bomb)
    s = sub.add_parser("webp-bomb")
    s.add_argument("out")
    s.add_argument("w", type=int)
    s.add_argument("h", type=int)
    s.set_defaults(fn=webp_bomb)
    s = sub.add_parser("many-scans")
    s.add_argument("inp")
    s.add_argument("out")
    s.add_argument("n", type=int)
    s.set_defaults(fn=many_scans)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
