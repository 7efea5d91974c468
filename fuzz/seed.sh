#!/usr/bin/env bash
# Writes the seed corpora for the fuzz targets into fuzz/corpus/<target>/ (git-ignored):
#   decode: the golden vectors (tests/data/pyiso8583-vectors.json, every `encoded.*.hex`) and
#           malformed variants of each: truncated, bytes flipped, bitmap bits added, prefix
#           digits broken.
#   framer: the same messages behind each length header (one frame, several in one stream,
#           a frame cut short), plus hostile headers; each seed starts with the two control
#           bytes fuzz_targets/framer.rs expects (maximum selector, cut-size seed).
# Deterministic: running it twice writes the same files. Needs python3.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec python3 - "$here" <<'PY'
import hashlib, json, os, sys

here = sys.argv[1]
vectors = json.load(open(os.path.join(here, "..", "tests", "data", "pyiso8583-vectors.json")))

def write(target, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

messages = []
for v in vectors["vectors"]:
    for layout, enc in sorted(v["encoded"].items()):
        messages.append(bytes.fromhex(enc["hex"]))

# ----- decode -----
n_decode = 0
for m in messages:
    variants = [m, m[: len(m) // 2], m[:-1], m[:4], m[:12], m[:20], m + b"\x00", m + m[:5]]
    for pos in sorted({4, 5, 12, 13, 20, 21, len(m) // 3, len(m) // 2, len(m) - 2}):
        if pos < len(m):
            flipped = bytearray(m)
            flipped[pos] ^= 0xFF
            variants.append(bytes(flipped))
            digit = bytearray(m)
            digit[pos] = ord("A")  # a letter where a digit or prefix may stand
            variants.append(bytes(digit))
    # Every bitmap bit set: fields the spec may not define, the tertiary bitmap (DE 65).
    for start, width in ((4, 8), (2, 8), (4, 16)):
        if len(m) > start + width:
            all_bits = bytearray(m)
            all_bits[start : start + width] = b"\xff" * width if width == 8 else b"F" * 16
            variants.append(bytes(all_bits))
    for v in variants:
        write("decode", v)
        n_decode += 1

# ----- framer -----
def header(framing, n):
    if framing == "len2":
        return n.to_bytes(2, "big")
    if framing == "len4":
        return n.to_bytes(4, "big")
    if framing == "ascii4":
        return b"%04d" % n
    d = b"%04d" % n
    return bytes([(d[0] - 48) << 4 | (d[1] - 48), (d[2] - 48) << 4 | (d[3] - 48)])

n_framer = 0
for i, framing in enumerate(("len2", "len4", "ascii4", "bcd2")):
    frames = [header(framing, len(m)) + m for m in messages[i::4]]
    streams = frames[:3] + [b"".join(frames), frames[0][:-3], header(framing, 0) + frames[1]]
    for j, s in enumerate(streams):
        for control in (0, 5):
            write("framer", bytes([control, (i * 16 + j) & 0xFF]) + s)
            n_framer += 1
hostile = [b"\xff\xff" + b"x" * 10, b"\xff\xff\xff\xff" + b"x" * 10, b"99990800", b"\x99\x99",
           b"00 5hello", b"\x0a\x00hello", b"\x00\x00\x00\x00", b"0000" * 3]
for h in hostile:
    for control in (0, 1, 2):
        write("framer", bytes([control, 7]) + h)
        n_framer += 1

print(f"decode: {n_decode} seeds, framer: {n_framer} seeds in {os.path.join(here, 'corpus')}")
PY
