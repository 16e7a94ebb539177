#!/usr/bin/env python3
"""The memory worst case of `make bench`: CLIENTS connections each POST a body of BYTES bytes
at once (the largest the proxy accepts by default), one byte short of finishing, hold it until
all of them are sent, then finish. Prints one JSON line: how many got each status."""

import argparse
import json
import socket
import threading
import urllib.parse


def one_client(host, port, path, size, barrier, statuses, lock):
    prefix = b'{"model":"bench","messages":[{"role":"user","content":"'
    suffix = b'"}]}'
    filler = size - len(prefix) - len(suffix)
    head = (f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {size}\r\nconnection: close\r\n\r\n").encode()
    status = "error"
    sock = None
    try:
        sock = socket.create_connection((host, port), timeout=120)
        sock.sendall(head + prefix)
        chunk = b"x" * (1024 * 1024)
        left = filler
        while left > 0:
            part = chunk[: min(left, len(chunk))]
            sock.sendall(part)
            left -= len(part)
    except OSError:
        # Refused before the body was read (503 over the body budget): the proxy closed on us.
        status = "refused while sending"
    # Everyone holds an almost complete body (or was refused) at the same moment.
    try:
        barrier.wait(timeout=300)
    except threading.BrokenBarrierError:
        pass
    if sock is not None:
        try:
            if status == "error":
                sock.sendall(suffix)
            answer = sock.recv(64)
            if answer.startswith(b"HTTP/"):
                status = answer.split(b" ", 2)[1].decode()
        except (OSError, IndexError):
            pass
        sock.close()
    with lock:
        statuses[status] = statuses.get(status, 0) + 1


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--bytes", type=int, default=32 * 1024 * 1024)
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.url)
    barrier = threading.Barrier(args.clients)
    statuses, lock = {}, threading.Lock()
    threads = [threading.Thread(target=one_client,
                                args=(url.hostname, url.port, url.path, args.bytes, barrier, statuses, lock))
               for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"clients": args.clients, "bytes": args.bytes, "statuses": statuses}))


if __name__ == "__main__":
    main()
