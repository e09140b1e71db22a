#!/usr/bin/env python3
"""free_port.py [--cluster]: prints a TCP port free on 127.0.0.1.

--cluster: one a Redis Cluster node can take: its bus port (the port plus
10000) must be free too and at most 65535, so the port is at most 55535
(the kernel's own pick, bind to port 0, is often above it, and such a node
refuses to start). The port is only free when it is printed: a caller that
binds it later tries again if it was taken in between."""
import random
import socket
import sys


def free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def main():
    cluster = sys.argv[1:] == ["--cluster"]
    if sys.argv[1:] and not cluster:
        sys.exit("usage: free_port.py [--cluster]")
    for _ in range(500):
        # below 32768, where the kernel's ephemeral ports begin
        p = random.randint(20000, 32000) if cluster else random.randint(10000, 32000)
        if free(p) and (not cluster or free(p + 10000)):
            print(p)
            return
    sys.exit("free_port.py: no free port found")


main()
