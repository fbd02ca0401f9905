"""The prose of docs/scanner.md that bench.bench_scanner writes around its tables."""

from __future__ import annotations

from bench.scanner_eval import HOLD_FRAMES

__all__ = ["DESIGN_NOTES", "EVALUATION_INTRO", "REAL_PHOTOS"]

EVALUATION_INTRO = [
    "## Simulated phone photographs (bench/scanner_set.py)",
    "",
    "1280x720 JPEGs of real payloads of every kind (v1 as Code 128 and as QR, v2, v3, the EMV",
    "collection QR) on phone screens and on paper, under one main condition each (perspective,",
    "curvature, fold, defocus, motion blur, glare, screen moire, low light, heavy JPEG, small",
    "code) and a second one on a third of the frames; every frame also has lens softness,",
    "sensor noise, uneven light and a JPEG step. `scanner`: the till's Scanner, real clock and",
    f"budget, each photo held up to {HOLD_FRAMES} frames (100 ms at 30 fps; a customer holds a",
    "phone longer); it reads payment codes only and ignores the EMV poster (`other QR`) by",
    "design. `reader`: every pass of the same plan until one reads, as `paycode-pos inspect",
    "--image` does. The others: one read by that decoder alone. Wrong reads: photos where a",
    "reader returned a text other than the one shown. ms: per frame (scanner) or per photo, one",
    "core; compare them within one run only (the load average above inflates all alike).",
    "",
    "**This set is a proxy, not real photographs.** It was built to be harder than the phone",
    "photos of public decoder test suites (zxing-cpp alone reads about 92% of those QR codes,",
    "and less of these), but its failure modes are only the ones it simulates. The bar",
    "(docs/bars.md) is for real photographs: the few public ones this machine can fetch are",
    "measured below, and any folder of them can be (last section).",
]

REAL_PHOTOS = [
    "## Running the evaluation on other photographs",
    "",
    "Put the photos in a folder with an `expected.tsv`: a header line `file<TAB>symbology<TAB>",
    "text<TAB>kind`, then one line per photo (`symbology` is qr or code128, `text` exactly what",
    "the code holds, `\\t` `\\r` `\\n` `\\\\` for a tab, CR, LF, backslash; `kind` v1 to v4",
    "for payment codes, anything else for other codes), and run",
    "",
    "    .venv/bin/python -m bench.scanner_eval FOLDER --list-misses",
    "",
    "It prints the table above for that folder (the misses and wrong reads by file name).",
    "`python -m bench.scanner_set OUT --split holdout` writes the simulated set in this same",
    "layout, so the two are measured by one code path.",
    "",
]


DESIGN_NOTES = [
    "## How a frame is spent",
    "",
    "`paycode.merchant_pos.scanloop` converts the frame to gray (downscaled to at most 1280 px",
    "wide) and runs the `always` pass: one zxing-cpp read of QR and Code 128. When it finds no",
    "payment code, a ~0.4 ms test (`paycode.merchant_pos.codelike`: a 32 px block dense with",
    "strong edges) decides whether the frame may hold a code at all; most frames at a till",
    "hold none and stop there. Otherwise `ring` passes run in turn while each one's running",
    "cost estimate fits what is left of the budget; the turn carries over to the next frame. A",
    "pass that never fits (pyzbar) still runs at least every 10 frames (starvation guard) on",
    "frames that pass the test. The passes were chosen on the `tune` split and on more frames",
    "of its seed (indices 120-1679): sharpening (focus and motion blur), Code 128 widened 1.5x",
    "on an image squeezed to a quarter height (small barcodes; the squeeze keeps it cheap),",
    "1.5x enlargement (small codes), the box of dense-edge blocks enlarged 2x (codes near 2 px",
    "per module, for a fraction of the cost of enlarging the frame), the same box at one fixed",
    "threshold (small or defocused barcodes whose narrow bars a local threshold merges), a",
    "15 px adaptive threshold (defocus under glare), the box with its motion blur divided out",
    "(`paycode.merchant_pos.deblur`: a Wiener filter for the smear whose length and",
    "direction the box's cepstrum gives) and with a defocus disk divided out, strong",
    "sharpening of both formats (low light with defocus, motion blur), CLAHE (glare, a",
    "fold's shadow), the box unfolded (`paycode.merchant_pos.unfold`: a folded sheet's far",
    "side stretched back at a few creases), the global binarizer (screen moire), pyzbar at",
    "full size (what it reads beyond zxing is mostly at full size). `paycode-pos inspect",
    "--image` runs every pass on",
    "the still, cheap first, until one reads (`paycode.merchant_pos.stillread`), and last",
    "WeChat's CNN-located QR reader (`wechat` row), too slow for a camera frame. Every text",
    "the Scanner decodes goes through the version registry (`route` + the version's `parse`);",
    "anything else is dropped.",
    "OpenCV is not in the default plan: it costs 5-10x as much per frame, its worst frame has",
    "no bound (see its max column), it reads no Code 128 in this build, and it adds no frame",
    "the others miss (line above).",
]
