"""Client helpers for a keras_seg SavedModel behind TensorFlow Serving.

REST (needs nothing beyond numpy and OpenCV):

    >>> body = rest_request([image_a, image_b])            # JSON-ready dict, images base64
    >>> response = predict_rest(rest_url("localhost", 8501, "seg"), [image_a, image_b])
    >>> class_maps = parse_rest_response(response)         # one [H, W] array per image

gRPC (needs the `serving` extra: tensorflow-serving-api):

    >>> request = grpc_request([image_a], model_name="seg")
    >>> class_maps = predict_grpc("localhost:8500", [image_a], model_name="seg")

Images are RGB arrays (`[H, W, 3]` uint8), encoded bytes, or file paths. They are sent as
PNG (lossless, so the server sees exactly these pixels) unless `image_format="jpeg"`.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SIGNATURE = "serving_bytes"
#: gRPC outputs fetched by default: the probabilities are large and most clients want ids.
DEFAULT_OUTPUTS = ("class_map", "height", "width")
ImageLike = np.ndarray | bytes | str | os.PathLike


def encode_image(image: ImageLike, image_format: str = "png") -> bytes:
    """Encoded bytes of `image`: bytes pass through, paths are read, arrays are encoded.

    Args:
        image: RGB uint8 `[H, W, 3]`, greyscale `[H, W]`/`[H, W, 1]`, encoded bytes or a path.
        image_format: "png" (lossless) or "jpeg" for arrays.
    """
    if isinstance(image, bytes):
        return image
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    import cv2

    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or array.shape[-1:] == (0,):
        raise ValueError(
            f"image arrays must be uint8 [H, W, 3] or [H, W], got {array.dtype} {array.shape}"
        )
    if array.ndim == 3 and array.shape[2] == 3:
        array = array[..., ::-1]  # OpenCV writes BGR
    elif array.ndim == 3 and array.shape[2] != 1:
        raise ValueError(f"image arrays need 1 or 3 channels, got shape {array.shape}")
    suffixes = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg"}
    if image_format not in suffixes:
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    ok, encoded = cv2.imencode(suffixes[image_format], np.ascontiguousarray(array))
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {array.shape}")
    return encoded.tobytes()


def _encode_all(images: Sequence[ImageLike], image_format: str) -> list[bytes]:
    single = isinstance(images, (bytes, str, os.PathLike))
    if single or (isinstance(images, np.ndarray) and images.ndim != 4):
        raise TypeError(
            f"images must be a list of images or an [N, H, W, C] array, got {type(images).__name__}"
            + (f" of shape {images.shape}" if isinstance(images, np.ndarray) else "")
        )
    encoded = [encode_image(im, image_format) for im in images]
    if not encoded:
        raise ValueError("images is empty: send at least one image")
    return encoded


def rest_request(
    images: Sequence[ImageLike],
    signature_name: str = DEFAULT_SIGNATURE,
    image_format: str = "png",
) -> dict[str, Any]:
    """The JSON body of a TF Serving REST `:predict` call for `images`.

    `{"signature_name": ..., "instances": [{"image_bytes": {"b64": ...}}, ...]}`: the server
    base64-decodes `{"b64": ...}` values into the string input `image_bytes`.
    """
    encoded = _encode_all(images, image_format)
    instances = [{"image_bytes": {"b64": base64.b64encode(b).decode()}} for b in encoded]
    return {"signature_name": signature_name, "instances": instances}


def rest_url(host: str, port: int, model_name: str, version: int | None = None) -> str:
    """`http://host:port/v1/models/NAME[/versions/N]:predict`."""
    version_part = f"/versions/{version}" if version is not None else ""
    return f"http://{host}:{port}/v1/models/{model_name}{version_part}:predict"


def _crop(outputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    maps = np.asarray(outputs["class_map"])
    if "height" not in outputs:
        return list(maps)
    sizes = zip(np.asarray(outputs["height"]), np.asarray(outputs["width"]), strict=True)
    return [m[:h, :w] for m, (h, w) in zip(maps, sizes, strict=True)]


def parse_rest_response(response: dict[str, Any] | str | bytes) -> list[np.ndarray]:
    """Class maps (`[H, W]` int32, one per image, cropped to its size) from a REST response.

    Accepts the row format (`{"predictions": [{...}, ...]}`) and the columnar format
    (`{"outputs": {...}}`); a server error (`{"error": ...}`) raises RuntimeError.
    """
    if isinstance(response, (str, bytes)):
        response = json.loads(response)
    if "error" in response:
        raise RuntimeError(f"TF Serving error: {response['error']}")
    if "predictions" in response:
        rows = response["predictions"]
        if rows and not isinstance(rows[0], dict):  # a single-output signature
            rows = [{"class_map": r} for r in rows]
        columns = {
            k: np.asarray([r[k] for r in rows], np.int32)
            for k in DEFAULT_OUTPUTS
            if rows and k in rows[0]
        }
    elif "outputs" in response:
        outputs = response["outputs"]
        outputs = outputs if isinstance(outputs, dict) else {"class_map": outputs}
        columns = {k: np.asarray(v, np.int32) for k, v in outputs.items() if k in DEFAULT_OUTPUTS}
    else:
        raise ValueError(f"not a TF Serving predict response: keys {sorted(response)}")
    if "class_map" not in columns:
        raise ValueError("the response has no 'class_map' output")
    return _crop(columns)


def predict_rest(
    url: str,
    images: Sequence[ImageLike],
    signature_name: str = DEFAULT_SIGNATURE,
    timeout: float = 60.0,
) -> list[np.ndarray]:
    """POST `rest_request(images)` to `url` (see `rest_url`) and parse the class maps."""
    import urllib.error
    import urllib.request

    body = json.dumps(rest_request(images, signature_name)).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return parse_rest_response(reply.read())
    except urllib.error.HTTPError as e:  # TF Serving puts {"error": ...} in 4xx/5xx bodies
        return parse_rest_response(e.read())


def _serving_apis():
    try:
        from tensorflow_serving.apis import predict_pb2
        from tensorflow_serving.apis import prediction_service_pb2_grpc
    except ImportError as e:
        raise ImportError(
            "gRPC helpers need tensorflow-serving-api: pip install 'keras-seg[serving]'"
        ) from e
    return predict_pb2, prediction_service_pb2_grpc


def grpc_request(
    images: Sequence[ImageLike],
    model_name: str,
    signature_name: str = DEFAULT_SIGNATURE,
    version: int | None = None,
    output_filter: Sequence[str] | None = DEFAULT_OUTPUTS,
    image_format: str = "png",
):
    """A `tensorflow.serving.PredictRequest` carrying `images` as the string input `image_bytes`."""
    import tensorflow as tf

    predict_pb2, _ = _serving_apis()
    encoded = _encode_all(images, image_format)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs["image_bytes"].CopyFrom(
        tf.make_tensor_proto(encoded, dtype=tf.string, shape=[len(encoded)])
    )
    if output_filter:
        request.output_filter.extend(output_filter)
    return request


def parse_grpc_response(response) -> list[np.ndarray]:
    """Class maps (one `[H, W]` array per image) from a `PredictResponse`."""
    import tensorflow as tf

    outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    if "class_map" not in outputs:
        raise ValueError(f"the response has no 'class_map' output, only {sorted(outputs)}")
    return _crop(outputs)


def predict_grpc(
    target: str,
    images: Sequence[ImageLike],
    model_name: str,
    signature_name: str = DEFAULT_SIGNATURE,
    timeout: float = 60.0,
    **kwargs: Any,
) -> list[np.ndarray]:
    """Send `grpc_request(...)` to `target` ("host:8500") and parse the class maps."""
    import grpc

    _, service = _serving_apis()
    request = grpc_request(images, model_name, signature_name, **kwargs)
    with grpc.insecure_channel(target) as channel:
        response = service.PredictionServiceStub(channel).Predict(request, timeout=timeout)
    return parse_grpc_response(response)


def colorize(class_map: np.ndarray, palette: Any) -> np.ndarray:
    """RGB uint8 `[H, W, 3]` picture of a class map; padding (-1) is black."""
    palette = np.concatenate([np.asarray(palette, np.uint8).reshape(-1, 3), [[0, 0, 0]]])
    class_map = np.asarray(class_map)
    index = np.where((class_map >= 0) & (class_map < len(palette) - 1), class_map, -1)
    return palette[index]
