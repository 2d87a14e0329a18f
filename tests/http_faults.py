"""A real HTTP server on 127.0.0.1 that serves test images and injects the faults of the web."""

from __future__ import annotations

import contextlib
import io
import struct
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

# path -> reason img2dataset (or our guards) must record for it
FAULTS = {
    "/fault/404": "404",
    "/fault/500": "500",
    "/fault/slow": "timed out",
    "/fault/trickle": "url_deadline",
    "/fault/truncated": "",  # IncompleteRead or a decode error, depending on where it breaks
    "/fault/notimage": "decoding",
    "/fault/redirect-loop": "redirect",
    "/fault/huge": "image too large",
}


def make_image(i: int, size: tuple[int, int] = (64, 48), fmt: str = "PNG") -> bytes:
    """A small distinct image (a colour gradient seeded by i)."""
    img = Image.new("RGB", size, ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
    for x in range(0, size[0], 4):
        img.putpixel((x, x % size[1]), (255 - (i % 256), 0, 0))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def odd_image(kind: str) -> bytes:
    """Images that are valid but unusual, as the web serves them (issue 8's list), or empty."""
    if kind == "empty":
        return b""
    base = Image.new("RGB", (96, 64), (200, 30, 30))
    for x in range(0, 96, 3):
        base.putpixel((x, x % 64), (0, 0, 255))
    buf = io.BytesIO()
    if kind == "cmyk.jpg":
        base.convert("CMYK").save(buf, format="JPEG")
    elif kind == "16bit.png":
        Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257).save(buf, format="PNG")
    elif kind == "palette.png":
        pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        pal.info["transparency"] = 0
        pal.save(buf, format="PNG", transparency=0)
    elif kind == "animated.gif":
        frames = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    elif kind == "rgba.webp":
        rgba = base.convert("RGBA")
        rgba.putalpha(Image.linear_gradient("L").resize(base.size))  # really translucent
        rgba.save(buf, format="WEBP")
    else:
        raise ValueError(kind)
    return buf.getvalue()


ODD_KINDS = ("empty", "cmyk.jpg", "16bit.png", "palette.png", "animated.gif", "rgba.webp")


def huge_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A decompression bomb: a 1-bit PNG of width x height that is only a few tens of KB on the wire."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class FaultServer:
    """Serves /img/<i>.png (valid images), /flaky/<i>.png (fails until released) and /fault/* routes."""

    def __init__(self, slow_seconds: float = 4.0) -> None:
        self.hits: Counter[str] = Counter()
        self.flaky_ok = False
        self.delay = 0.0  # per-image delay, to make runs slow enough to kill mid-way
        self.slow_seconds = slow_seconds
        self._huge = huge_png()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                server.hits[self.path] += 1
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    server.route(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> FaultServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _send(self, h: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str = "image/png") -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def route(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path
        if path.startswith("/img/") or (path.startswith("/flaky/") and self.flaky_ok):
            if self.delay:
                time.sleep(self.delay)
            i = int(path.rsplit("/", 1)[1].split(".")[0])
            return self._send(h, 200, make_image(i))
        if path.startswith("/flaky/"):
            return self._send(h, 503, b"try later", "text/plain")
        if path == "/fault/404":
            return self._send(h, 404, b"not found", "text/plain")
        if path == "/fault/500":
            return self._send(h, 500, b"boom", "text/plain")
        if path == "/fault/slow":
            time.sleep(self.slow_seconds)
            return self._send(h, 200, make_image(0))
        if path == "/fault/trickle":
            body = make_image(1)
            h.send_response(200)
            h.send_header("Content-Type", "image/png")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            for b in body:
                h.wfile.write(bytes([b]))
                h.wfile.flush()
                time.sleep(0.5)
            return None
        if path == "/fault/truncated":
            body = make_image(2)
            h.send_response(200)
            h.send_header("Content-Type", "image/png")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[: len(body) // 3])
            h.wfile.flush()
            h.close_connection = True
            return None
        if path == "/fault/notimage":
            return self._send(h, 200, b"<html>this is not an image</html>" * 10, "image/jpeg")
        if path == "/fault/redirect-loop":
            h.send_response(302)
            h.send_header("Location", "/fault/redirect-loop")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return None
        if path == "/fault/huge":
            return self._send(h, 200, self._huge)
        if path.startswith("/odd/") and path[5:] in ODD_KINDS:
            return self._send(h, 200, odd_image(path[5:]), "application/octet-stream")
        return self._send(h, 404, b"no such route", "text/plain")
