"""Zero-shot scoring: the asset's one matrix product against one index search per image (the seed).

The seed scored every image by searching an index of the label vectors once per image, over HTTP
(93k round trips). Two versions of that baseline run here, on the same vectors in the same run:
one FAISS search per image in process (the seed's method with every network cost removed, the
most generous baseline there is), and one search per image over a keep-alive HTTP connection to a
loopback server holding the FAISS labels index (the seed's method as it was deployed).
``core.labels.score`` computes the whole (images x labels) cosine matrix and the softmax in one go.
All three must agree on every score.

    python bench/labels.py                 # 20k images x 4 labels, dim 512 (ViT-B-32)
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import socket
import sys
import threading
import time

import faiss
import numpy as np

from hotdog_dagster.core.labels.scoring import score
from hotdog_dagster.core.settings import DEFAULT_LABELS


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def serve_labels_index(index: faiss.Index, k: int) -> http.server.ThreadingHTTPServer:
    """A minimal search service: POST a JSON vector, get the top-k label scores and positions back."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle stalls: fair to the seed

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            q = np.asarray(json.loads(body), dtype=np.float32)[None, :]
            d, j = index.search(q, k)
            out = json.dumps({"scores": d[0].tolist(), "ids": j[0].tolist()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--labels", type=int, default=len(DEFAULT_LABELS))
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5, help="matrix-product repetitions (best is reported)")
    ap.add_argument("--http-images", type=int, default=2000, help="images sent over HTTP (the rate is extrapolated)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    images, labels = unit(rng, args.images, args.dim), unit(rng, args.labels, args.dim)
    logit_scale = 100.0

    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        cos, prob = score(images, labels, logit_scale)
        best = min(best, time.perf_counter() - t0)

    index = faiss.IndexFlatIP(args.dim)
    index.add(labels)
    seed_cos = np.zeros_like(cos)
    t0 = time.perf_counter()
    for i in range(args.images):  # the seed: one search per image against the labels index
        d, j = index.search(images[i : i + 1], args.labels)
        seed_cos[i, j[0]] = d[0]
    seed = time.perf_counter() - t0

    server = serve_labels_index(index, args.labels)
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    http_cos = np.zeros((args.http_images, args.labels), dtype=np.float32)
    t0 = time.perf_counter()
    for i in range(args.http_images):  # the seed as deployed: one HTTP round trip per image
        conn.request(
            "POST", "/search", body=json.dumps(images[i].tolist()), headers={"Content-Type": "application/json"}
        )
        reply = json.loads(conn.getresponse().read())
        http_cos[i, reply["ids"]] = reply["scores"]
    http_per_image = (time.perf_counter() - t0) / args.http_images
    conn.close()
    server.shutdown()
    http_total = http_per_image * args.images

    err = max(float(np.abs(seed_cos - cos).max()), float(np.abs(http_cos - cos[: args.http_images]).max()))
    print(f"{args.images} images x {args.labels} labels, dim {args.dim}")
    print(f"one FAISS search per image, in process: {seed:9.4f} s  ({args.images / seed:12.0f} images/s)")
    print(
        f"one search per image over HTTP (seed):  {http_total:9.4f} s  ({1 / http_per_image:12.0f} images/s;"
        f" {args.http_images} sent, extrapolated)"
    )
    print(f"one matrix product + softmax (ours):    {best:9.4f} s  ({args.images / best:12.0f} images/s)")
    print(f"speed-up over the in-process search:    {seed / best:9.1f}x")
    print(f"speed-up over the seed's HTTP search:   {http_total / best:9.1f}x  (target >= 100x)")
    print(f"max |difference| of cosines:            {err:9.2e}")
    return 0 if err < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
