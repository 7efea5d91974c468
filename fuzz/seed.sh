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

# Messages in fuzz_targets/decode.rs's `fuzz-exotic` layout (EBCDIC MTI, hex bitmaps, 2-byte
# header), which the golden vectors do not reach: libFuzzer cannot guess EBCDIC digits easily.
def bcd(digits, pad="left"):
    if len(digits) % 2:
        digits = "0" + digits if pad == "left" else digits + "0"
    return bytes.fromhex(digits)

def ebc(text):
    return text.encode("cp037")

EXOTIC = {
    2: lambda: bcd("%02d" % 19) + bcd("4761739001010010123", "right"),
    3: lambda: ebc("310000"),
    4: lambda: bcd("000000012550"),
    11: lambda: b"000101",
    14: lambda: bcd("912"),
    28: lambda: bytes([5]) + b"C" + bcd("1234"),
    29: lambda: bcd("03") + b"D" + bcd("9876"),
    31: lambda: ebc("05C1234"),
    35: lambda: bcd("12") + bytes.fromhex("4761739001010010D2812201"),
    41: lambda: ebc("TERM0001"),
    43: lambda: b"13ACME HARDWARE",
    44: lambda: ebc("004A1B2"),
    48: lambda: (8).to_bytes(2, "big") + b"ORDER-42",
    52: lambda: bytes.fromhex("1A2B3C4D5E6F7081"),
    55: lambda: b"0089F260811",
    62: lambda: bytes([3]) + b"\x00\xff\x10",
    63: lambda: b"DEADbeef",
    70: lambda: bcd("301"),
    90: lambda: b"0200" + b"000101" + b"0425143015" + b"00000012345" + b"00000054321",
    100: lambda: bcd("0011") + bcd("12345678901"),
    128: lambda: bytes(8),
    130: lambda: b"014hello tertiary",
    192: lambda: b"091234=5678",
}

def exotic(mti, fields):
    # DE 65 (the tertiary bitmap) sits between DE 64 and DE 66.
    words = [0, 0, 0]
    for n in fields:
        words[(n - 1) // 64] |= 1 << (63 - (n - 1) % 64)
    if words[2]:
        words[1] |= 1 << 63
    if words[1]:
        words[0] |= 1 << 63
    out = b"\x00\x01" + ebc(mti) + b"%016X" % words[0]
    if words[0] >> 63:
        out += b"%016X" % words[1]
    for n in sorted(set(fields) | ({65} if words[2] else set())):
        out += b"%016X" % words[2] if n == 65 else EXOTIC[n]()
    return out

messages.append(exotic("0100", [2, 3, 4, 11, 14, 28, 35, 41, 52]))
messages.append(exotic("0420", [11, 29, 31, 43, 44, 48, 55, 62, 63, 70, 90, 100, 128]))
messages.append(exotic("0800", [11, 70, 130, 192]))

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
