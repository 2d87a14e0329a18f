"""Limits img2dataset lacks: a pixel cap checked before decoding, a per-URL deadline and size cap,
and a sample writer whose write errors are not swallowed.

img2dataset decodes every image fully with OpenCV before any size check, so one 20,990 x 29,700 PNG
costs gigabytes per thread; urllib's timeout bounds each socket read, not the whole response, so
a server that trickles bytes can hold a thread forever; and it catches a failed sample write (a full
disk) as if that one sample had failed, printing a traceback and dropping the row. These guards keep
img2dataset's own code and outputs and add the checks around it.
"""

from __future__ import annotations

import contextlib
import io
import time
import urllib.request
import warnings
from collections.abc import Iterator
from typing import Any

from img2dataset import downloader as i2d_downloader
from img2dataset.resizer import Resizer
from img2dataset.writer import WebDatasetSampleWriter
from PIL import Image


class GuardedResizer(Resizer):
    """img2dataset's Resizer that first reads the image header and refuses images over a pixel cap."""

    def __init__(self, *args: Any, max_image_pixels: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_image_pixels = max_image_pixels

    def __call__(self, img_stream: io.BytesIO, blurring_bbox_list: Any = None) -> tuple:
        reason = self.too_large(img_stream)
        if reason is not None:
            return None, None, None, None, None, reason
        img_stream.seek(0)
        return super().__call__(img_stream, blurring_bbox_list)

    def too_large(self, img_stream: io.BytesIO) -> str | None:
        img_stream.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(img_stream) as img:  # reads the header only
                    w, h = img.size
        except Image.DecompressionBombError as exc:
            return f"image too large: {exc}"
        except Exception:  # noqa: BLE001 - not an image PIL knows; OpenCV gets its own try
            return None
        if w * h > self.max_image_pixels:
            return f"image too large: {w}x{h} = {w * h:,} pixels > max_image_pixels {self.max_image_pixels:,}"
        return None


class StrictSampleWriter(WebDatasetSampleWriter):
    """img2dataset's webdataset writer that fails the shard on a write error (ENOSPC, EIO) instead of
    letting img2dataset drop the row: the first error is kept, later samples are not written, and
    close() raises it once every file is closed (so no half-written file complains at exit)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error: Exception | None = None

    def write(self, img_str: Any, key: str, caption: Any, meta: dict) -> None:
        if self.error is not None:
            return
        try:
            super().write(img_str, key, caption, meta)
        except OSError as exc:
            self.error = exc

    def close(self) -> None:
        parquet = self.buffered_parquet_writer
        for close in (parquet.close, self.tarwriter.close, self.tar_fd.close):  # each, even if one fails
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - after a failed write closing fails too: keep the first
                self.error = self.error or exc
        if self.error is not None:
            if parquet.parquet_writer is not None:  # its footer cannot be written: no retry from __del__
                parquet.parquet_writer.is_open = False
                with contextlib.suppress(Exception):
                    parquet.output_fd.close()
            raise self.error


_USER_AGENT = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"


def _bounded_download_image(
    row: tuple[int, str],
    timeout: float,
    user_agent_token: str | None,
    disallowed_header_directives: Any,
    *,
    deadline: float,
    max_bytes: int,
) -> tuple[int, io.BytesIO | None, str | None]:
    """img2dataset's download_image, reading the body in pieces under a deadline and a size cap."""
    key, url = row
    agent = _USER_AGENT
    if user_agent_token:
        agent += f" (compatible; {user_agent_token}; +https://github.com/rom1504/img2dataset)"
    start = time.monotonic()
    try:
        request = urllib.request.Request(url, data=None, headers={"User-Agent": agent})
        with urllib.request.urlopen(request, timeout=timeout) as r:
            if disallowed_header_directives and i2d_downloader.is_disallowed(
                r.headers, user_agent_token, disallowed_header_directives
            ):
                return key, None, "Use of image disallowed by X-Robots-Tag directive"
            length = r.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                return key, None, f"response too large: {int(length):,} bytes > max_image_bytes {max_bytes:,}"
            buf = io.BytesIO()
            while True:
                chunk = r.read1(1 << 16) if hasattr(r, "read1") else r.read(1 << 16)
                if not chunk:
                    break
                buf.write(chunk)
                if buf.tell() > max_bytes:
                    return key, None, f"response too large: over max_image_bytes {max_bytes:,}"
                if time.monotonic() - start > deadline:
                    return key, None, f"download exceeded url_deadline of {deadline:g} s"
            missing = getattr(r, "length", None)
            if missing:  # read1 does not raise on a short body the way read() does
                return key, None, f"IncompleteRead: {buf.tell()} bytes read, {missing} more expected"
        buf.seek(0)
        return key, buf, None
    except Exception as err:  # noqa: BLE001 - img2dataset records every failure as text
        return key, None, str(err) or type(err).__name__


@contextlib.contextmanager
def bounded_downloads(deadline: float, max_bytes: int) -> Iterator[None]:
    """Route img2dataset's per-URL fetch through the bounded version while a shard downloads."""
    original = i2d_downloader.download_image

    def fetch(row: tuple[int, str], timeout: float, user_agent_token: Any, directives: Any) -> tuple:
        return _bounded_download_image(
            row, timeout, user_agent_token, directives, deadline=deadline, max_bytes=max_bytes
        )

    i2d_downloader.download_image = fetch
    try:
        yield
    finally:
        i2d_downloader.download_image = original
