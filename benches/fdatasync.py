#!/usr/bin/env python3
"""fdatasync latency on this machine's disk: appending to a file, against overwriting a
zero-filled file and a posix_fallocate'd one (README, "Durability", "Next step").

    python3 benches/fdatasync.py [DIR]     # DIR: where to write the test file (default target/)

Each mode: WRITES writes of SIZE bytes, each followed by fdatasync; prints mean, median and
p99 per fdatasync, three rounds with the modes interleaved. The file is removed after each run.
"""
import os
import sys
import time

WRITES = 400
SIZE = 16384


def run(path, mode):
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    try:
        room = WRITES * SIZE + (2 << 20)
        if mode == "zero-filled":
            zeros = b"\0" * (1 << 20)
            for _ in range(room >> 20):
                os.write(fd, zeros)
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        elif mode == "fallocate":
            os.posix_fallocate(fd, 0, room)
            os.fsync(fd)
        record = b"x" * SIZE
        took = []
        for _ in range(WRITES):
            os.write(fd, record)
            t = time.perf_counter()
            os.fdatasync(fd)
            took.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    took.sort()
    return sum(took) / len(took), took[len(took) // 2], took[int(len(took) * 0.99)]


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else "target"
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"fdatasync-{os.getpid()}.tmp")
    for _ in range(3):
        for mode in ("append", "fallocate", "zero-filled"):
            mean, median, p99 = run(path, mode)
            print(f"{mode:12s} mean {mean * 1e3:.3f} ms  median {median * 1e3:.3f} ms  p99 {p99 * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
