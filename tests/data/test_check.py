"""The up-front file check: sizes from headers agree with TensorFlow's decoder, per format."""

import io

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_seg.data as data
from keras_seg.data.check import image_size
from keras_seg.data.check import tf_decodes


def encoded(kind: str, height: int = 37, width: int = 53) -> bytes:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
    buffer = io.BytesIO()
    pil = Image.fromarray(image)
    if kind == "jpeg_progressive":
        pil.save(buffer, "JPEG", progressive=True, exif=b"Exif\x00\x00" + bytes(3000))
    elif kind == "png_palette_4bit":
        pil.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(buffer, "PNG", bits=4)
    elif kind == "png_grey_16bit":
        return cv2.imencode(".png", (image[..., 0].astype(np.uint16) * 257))[1].tobytes()
    elif kind == "bmp_top_down":
        data = bytearray(cv2.imencode(".bmp", image)[1].tobytes())
        data[22:26] = (-height).to_bytes(4, "little", signed=True)  # rows stored top-down
        return bytes(data)
    elif kind in ("webp_lossy", "webp_lossless"):
        quality = 80 if kind == "webp_lossy" else 101
        return cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, quality])[1].tobytes()
    else:
        pil.save(buffer, kind.upper())
    return buffer.getvalue()


KINDS = ["jpeg", "jpeg_progressive", "png", "png_palette_4bit", "png_grey_16bit", "bmp",
         "bmp_top_down", "gif", "webp_lossy", "webp_lossless"]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_header_size_is_the_decoded_size(kind):
    file = encoded(kind)
    shape = tf.io.decode_image(file, expand_animations=False).shape
    assert image_size(io.BytesIO(file), decodes=None) == (53, 37) == (shape[1], shape[0])


# Cut in half, or without the end marker (JPEG EOI FFD9, PNG IEND chunk, last byte).
CUTS = [("jpeg", 0.5), ("jpeg", -2), ("png", 0.5), ("png", -12), ("gif", 0.5), ("bmp", 0.5),
        ("bmp", -1), ("webp_lossy", 0.5), ("webp_lossy", -1)]  # fmt: skip


@pytest.mark.parametrize("kind, cut", CUTS)
def test_truncated_files_are_rejected(kind, cut):
    file = encoded(kind, 120, 160)
    cut = int(len(file) * cut) if isinstance(cut, float) else cut
    with pytest.raises(data.DataError, match=r"truncated or corrupt \w+ \(.*; expected a complete"):
        image_size(io.BytesIO(file[:cut]), decodes=tf_decodes)


def test_a_file_cut_inside_its_header_is_not_decoded():
    def decodes(f):
        raise AssertionError("decoded")

    for kind, cut in (("jpeg", 300), ("png", 20), ("webp_lossy", 20)):
        with pytest.raises(data.DataError, match=r"truncated \w+ \(the file ends inside its head"):
            image_size(io.BytesIO(encoded(kind, 120, 160)[:cut]), decodes=decodes)


def test_a_png_without_its_header_chunk_is_rejected():
    file = encoded("png")
    with pytest.raises(data.DataError, match=r"corrupt PNG \(no IHDR chunk first; expected"):
        image_size(io.BytesIO(file[:12] + b"IHDX" + file[16:]), decodes=tf_decodes)


def test_image_suffixes_are_what_the_decoder_reads():
    assert data.IMAGE_SUFFIXES == (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
    assert all(s == s.lower() and s.startswith(".") for s in data.IMAGE_SUFFIXES)
