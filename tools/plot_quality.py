#!/usr/bin/env python3
"""Plot FLD and IS against training minutes, one line per recipe, as a PNG (no dependencies).

    python3 tools/plot_quality.py docs/quality_curves.csv docs/quality_curves.png

The CSV has a header and the columns recipe,minutes,fld,is,real_fld,real_is (one row per
checkpoint scored with `ddpm eval --n 1000`). Left panel: FLD / real FLD (log scale, lower is
better) with the target 2x as a dashed line; right panel: IS with the target 9.0 dashed. Each
recipe gets the colour of its first appearance in COLOURS; the legend is a coloured square per
recipe in that order, and docs/QUALITY.md names them.
"""
import csv
import math
import struct
import sys
import zlib

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]
# 3x5 glyphs for axis numbers
FONT = {"0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
        "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
        "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", "x": "000101010101000"}


class Canvas:
    def __init__(self, w, h):
        self.w, self.h = w, h
        self.px = bytearray([255] * (w * h * 3))

    def dot(self, x, y, c):
        if 0 <= x < self.w and 0 <= y < self.h:
            i = 3 * (y * self.w + x)
            self.px[i:i + 3] = bytes(c)

    def line(self, x0, y0, x1, y1, c, dash=0, width=1):
        n = max(abs(x1 - x0), abs(y1 - y0), 1)
        for k in range(n + 1):
            if dash and (k // dash) % 2:
                continue
            x, y = round(x0 + (x1 - x0) * k / n), round(y0 + (y1 - y0) * k / n)
            for d in range(width):
                self.dot(x, y + d - width // 2, c)
                self.dot(x + d - width // 2, y, c)

    def rect(self, x, y, w, h, c):
        for j in range(h):
            for i in range(w):
                self.dot(x + i, y + j, c)

    def text(self, x, y, s, c=(0, 0, 0), scale=2):
        for ch in s:
            g = FONT.get(ch)
            if g:
                for r in range(5):
                    for q in range(3):
                        if g[3 * r + q] == "1":
                            self.rect(x + q * scale, y + r * scale, scale, scale, c)
            x += 4 * scale

    def png(self, path):
        raw = b"".join(b"\x00" + bytes(self.px[3 * self.w * y:3 * self.w * (y + 1)]) for y in range(self.h))
        chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
        data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)) + \
            chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        import os
        os.replace(path + ".tmp", path)


def fmt(v):
    return ("%.1f" % v).rstrip("0").rstrip(".") if v < 10 else "%d" % round(v)


def panel(cv, x0, y0, w, h, series, xmax, ylo, yhi, logy, target, ticks):
    cv.line(x0, y0 + h, x0 + w, y0 + h, (0, 0, 0))
    cv.line(x0, y0, x0, y0 + h, (0, 0, 0))
    fy = (lambda v: math.log(v)) if logy else (lambda v: v)
    Y = lambda v: round(y0 + h - (fy(v) - fy(ylo)) / (fy(yhi) - fy(ylo)) * h)  # noqa: E731
    X = lambda m: round(x0 + m / xmax * w)  # noqa: E731
    for t in ticks:
        cv.line(x0 - 4, Y(t), x0, Y(t), (0, 0, 0))
        cv.line(x0 + 1, Y(t), x0 + w, Y(t), (225, 225, 225))
        cv.text(x0 - 8 - 8 * len(fmt(t)), Y(t) - 5, fmt(t))
    step = 5 if xmax <= 40 else 10
    for m in range(0, int(xmax) + 1, step):
        cv.line(X(m), y0 + h, X(m), y0 + h + 4, (0, 0, 0))
        cv.text(X(m) - 4 * len(str(m)), y0 + h + 8, str(m))
    cv.line(x0, Y(target), x0 + w, Y(target), (0, 0, 0), dash=6)
    for col, pts in series:
        pts = sorted(pts)
        for (a, b), (c, d) in zip(pts, pts[1:]):
            cv.line(X(a), Y(min(max(b, ylo), yhi)), X(c), Y(min(max(d, ylo), yhi)), col, width=2)
        for a, b in pts:
            cv.rect(X(a) - 3, Y(min(max(b, ylo), yhi)) - 3, 7, 7, col)


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    rows = list(csv.DictReader(open(argv[0], newline="")))
    recipes = []
    for r in rows:
        if r["recipe"] not in recipes:
            recipes.append(r["recipe"])
    fld = [(COLOURS[i % len(COLOURS)], [(float(r["minutes"]), float(r["fld"]) / float(r["real_fld"]))
                                        for r in rows if r["recipe"] == n]) for i, n in enumerate(recipes)]
    isc = [(COLOURS[i % len(COLOURS)], [(float(r["minutes"]), float(r["is"])) for r in rows if r["recipe"] == n])
           for i, n in enumerate(recipes)]
    xmax = max(float(r["minutes"]) for r in rows)
    xmax = 5 * math.ceil(xmax / 5)
    cv = Canvas(1000, 420)
    panel(cv, 80, 30, 380, 320, fld, xmax, 1, 64, True, 2, [1, 2, 4, 8, 16, 32, 64])
    panel(cv, 580, 30, 380, 320, isc, xmax, 3, 10, False, 9, [3, 4, 5, 6, 7, 8, 9, 10])
    for i in range(len(recipes)):
        cv.rect(80 + 40 * i, 392, 24, 16, COLOURS[i % len(COLOURS)])
    cv.png(argv[1])
    print(f"{argv[1]}: {len(recipes)} recipes, {len(rows)} points")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
