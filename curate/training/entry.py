"""The process that trains: `python -m curate.training.entry ARGV` (alone, or as each torchrun rank).

open_clip's training runs in a fresh interpreter (and under torchrun, several), so what curate adds
must happen there, before `open_clip_train.main.main(argv)`:
- curate's model configs (curate-tiny-vit64) are registered with open_clip;
- webdataset >= 0.2.96 ends every shard with an end-of-file marker `{}` that open_clip_train 3.3.0's
  `group_by_keys_nothrow` cannot take (KeyError 'fname'; webdataset issue #384, open_clip #935), and
  curate needs webdataset 0.2.111 (img2dataset pins < 0.3, open_clip's training extra pins <= 0.2.86).
  When the installed webdataset emits the marker, open_clip's `tarfile_to_samples_nothrow` is replaced
  by the same three steps with the markers dropped: exactly the behaviour of webdataset <= 0.2.86.
- with CURATE_GPU_DECODE=workers (or nvjpeg), images are augmented on the GPU after the loader workers
  (or nvJPEG) decoded them (curate.training.gpu_loader);
- `--torchrun ARGS` runs torchrun (torch.distributed.run) in this process instead;
- the process dies with its parent (PR_SET_PDEATHSIG on Linux), so a killed launcher (a Ray worker, a
  shell) never leaves a training running that a rerun would then race.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent exits (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def patch_webdataset_eof() -> bool:
    """Drop webdataset's end-of-shard markers before open_clip groups files into samples (see above)."""
    import open_clip_train.data as ocd

    if "eof_value" not in inspect.signature(ocd.tar_file_expander).parameters:
        return False  # webdataset <= 0.2.86: nothing to fix

    def tarfile_to_samples_nothrow(src: Any, handler: Any = ocd.log_and_continue) -> Iterator[dict[str, Any]]:
        streams = ocd.url_opener(src, handler=handler)
        files = (f for f in ocd.tar_file_expander(streams, handler=handler) if "fname" in f)
        return ocd.group_by_keys_nothrow(files, handler=handler)

    ocd.tarfile_to_samples_nothrow = tarfile_to_samples_nothrow
    return True


def main(argv: list[str]) -> int:
    die_with_parent()
    import open_clip
    from open_clip_train.main import main as open_clip_main

    from curate.clipmodels import BUILTIN_CONFIGS

    open_clip.add_model_config(BUILTIN_CONFIGS)
    patch_webdataset_eof()
    decoder = os.environ.get("CURATE_GPU_DECODE", "0")  # set by curate.training.job (train.gpu_decode)
    if decoder != "0":
        from curate.training.gpu_loader import install

        install(decoder)
    result = open_clip_main(argv)
    return 1 if result == -1 else 0  # open_clip returns -1 (and prints why) on refused settings


def torchrun(argv: list[str]) -> int:
    """torchrun itself, made to die with its parent too (its ranks then stop with it)."""
    die_with_parent()
    from torch.distributed.run import main as torchrun_main

    torchrun_main(argv)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(torchrun(args[1:]) if args[:1] == ["--torchrun"] else main(args))
