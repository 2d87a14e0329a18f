"""The embed stage's shard function on real images and the tiny open_clip model (no Ray here)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import torch

from curate.imagedecode import decode_pil
from curate.stages.embed import embed_shard, read_tar_images
from tests.embed_fixtures import clipart_jpegs, tiny_model, write_shard


def _rows(n: int) -> list[dict]:
    return [
        {
            "uid": f"{i:032x}",
            "text": f"clip art number {i}" if i != 2 else None,
            "key": f"00000000{i:04d}",
            "status": "success" if i != 3 else "failed_to_download",
            "clip_tiny_similarity_score": 0.5,  # as a DataComp pool part would carry its own score
        }
        for i in range(n)
    ]


def test_npz_and_scores_match_open_clip_reference_and_load_like_datacomp(tmp_path) -> None:  # noqa: ANN001
    m = tiny_model()
    jpegs = clipart_jpegs(7)
    images = {f"00000000{i:04d}": jpegs[i] for i in range(7) if i != 3}  # row 3 failed to download
    images["000000000005"] = b"\xff\xd8\xff corrupt"  # row 5 cannot be decoded
    images.pop("000000000007", None)  # row 7 is missing from the tar
    rows = _rows(8)
    tar, meta = write_shard(tmp_path, images, rows)
    npz = tmp_path / "00000000.npz"

    stats = embed_shard(tar, meta, npz, [m], batch_size=3, gpu_decode=True)
    assert stats["rows"] == 8 and stats["embedded"] == 5
    assert stats["undecodable"] == 1 and stats["no_image"] == 2

    data = np.load(npz)  # plain numpy, as DataComp's readers do
    assert sorted(data.files) == ["tiny_img", "tiny_txt"]
    assert data["tiny_img"].dtype == np.float16 and data["tiny_img"].shape == (8, 128)
    table = pq.read_table(meta)
    assert table.column("uid").to_pylist() == [r["uid"] for r in rows]  # row order kept
    assert table.schema.field("clip_tiny_similarity_score").type == "float"
    assert table.column("pool_clip_tiny_similarity_score").to_pylist() == [0.5] * 8

    good = [0, 1, 4, 6]
    ref_img = m.encode_pil([decode_pil(jpegs[i]) for i in good])  # encode_image(preprocess(img))
    texts = ["" if r["text"] is None else r["text"] for r in rows]
    ref_txt = m.encode_texts(texts)
    img = data["tiny_img"].astype(np.float32)
    txt = data["tiny_txt"].astype(np.float32)
    assert ((img[good] * ref_img).sum(1) >= 0.999).all()
    assert ((txt * ref_txt).sum(1) >= 0.999).all()
    scores = table.column("clip_tiny_similarity_score").to_numpy()
    assert np.allclose(scores[good], (ref_img * ref_txt[good]).sum(1), atol=2e-3)
    assert np.isnan(scores[[3, 5, 7]]).all() and np.isnan(img[[3, 5, 7]]).all()
    errors = table.column("embed_error").to_pylist()
    assert errors[3] == "no image (download failed_to_download)"
    assert errors[5].startswith("undecodable image: ")
    assert errors[7] == "no image in the tar"
    assert [errors[i] for i in good] == [None] * 4


def test_rerun_is_byte_identical_and_replaces_its_own_columns(tmp_path) -> None:  # noqa: ANN001
    m = tiny_model()
    jpegs = clipart_jpegs(4)
    tar, meta = write_shard(tmp_path, {f"00000000{i:04d}": j for i, j in enumerate(jpegs)}, _rows(4)[:3])
    npz = tmp_path / "00000000.npz"
    embed_shard(tar, meta, npz, [m], batch_size=2)
    first_npz, first_meta = npz.read_bytes(), meta.read_bytes()
    embed_shard(tar, meta, npz, [m], batch_size=2)
    assert npz.read_bytes() == first_npz
    assert meta.read_bytes() == first_meta
    embed_shard(tar, meta, npz, [m], batch_size=3)  # batch size is exec-only: same values to fp16 rounding
    assert np.allclose(np.load(npz)["tiny_img"], np.load(io.BytesIO(first_npz))["tiny_img"], atol=2e-3)
    names = pq.read_table(meta).column_names
    assert names.count("clip_tiny_similarity_score") == 1 and names.count("embed_error") == 1


def test_fast_tar_reader_equals_tarfile(tmp_path) -> None:  # noqa: ANN001
    from curate.stages.embed import _spans_with_tarfile, tar_image_spans

    jpegs = clipart_jpegs(3)
    tar, _ = write_shard(tmp_path, {f"k{i}": j for i, j in enumerate(jpegs)}, _rows(3))
    assert tar_image_spans(tar) == _spans_with_tarfile(tar)
    fast = [(k, bytes(v)) for k, v in read_tar_images(tar)]
    assert fast == [(f"k{i}", j) for i, j in enumerate(jpegs)]
    assert torch.frombuffer(bytearray(fast[0][1]), dtype=torch.uint8).numel() == len(jpegs[0])
