"""Client helpers: REST bodies and responses, a REST call over loopback HTTP, and gRPC."""

from __future__ import annotations

import base64
import json
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

import cv2
import numpy as np
import pytest
import tensorflow as tf

from keras_seg import serving
from tests.export import tf_serving_emulator


def _image(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rest_request_carries_lossless_base64_png():
    images = [_image(5, 7), _image(9, 4, seed=1)]
    body = serving.rest_request(images, signature_name="serving_bytes")
    assert set(body) == {"signature_name", "instances"}
    assert body["signature_name"] == "serving_bytes"
    assert [set(i) for i in body["instances"]] == [{"image_bytes"}, {"image_bytes"}]
    for instance, image in zip(body["instances"], images, strict=True):
        data = base64.b64decode(instance["image_bytes"]["b64"])
        assert data.startswith(b"\x89PNG")
        np.testing.assert_array_equal(tf.io.decode_png(data).numpy(), image)
    json.dumps(body)  # JSON-ready as it is


def test_encode_image_passes_bytes_and_reads_paths(tmp_path):
    assert serving.encode_image(b"\xff\xd8\xffabc") == b"\xff\xd8\xffabc"
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), _image()[..., ::-1])
    assert serving.encode_image(path) == path.read_bytes()
    assert serving.encode_image(_image(), "jpeg").startswith(b"\xff\xd8\xff")
    grey = tf.io.decode_png(serving.encode_image(_image()[..., 0])).numpy()
    np.testing.assert_array_equal(grey[..., 0], _image()[..., 0])


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((4, 4, 3), np.float32), "uint8"),
        (np.zeros((4, 4, 4), np.uint8), "1 or 3 channels"),
        (np.zeros((2, 2, 2, 2, 3), np.uint8), "uint8"),
    ],
)
def test_encode_image_rejects_bad_arrays(bad, match):
    with pytest.raises(ValueError, match=match):
        serving.encode_image(bad)


def test_rest_request_wants_a_list():
    with pytest.raises(TypeError, match="list of images"):
        serving.rest_request(_image())
    with pytest.raises(TypeError, match="list of images"):
        serving.rest_request(b"\x89PNG...")
    with pytest.raises(ValueError, match="empty"):
        serving.rest_request([])
    with pytest.raises(ValueError, match="image_format"):
        serving.rest_request([_image()], image_format="gif")
    batch = np.stack([_image(), _image(seed=2)])
    assert len(serving.rest_request(batch)["instances"]) == 2


def test_parse_rest_response_row_columnar_single_output_and_error():
    padded = [[0, 1, -1], [2, 2, -1]]
    rows = {"predictions": [{"class_map": padded, "height": 2, "width": 2}]}
    (only,) = serving.parse_rest_response(json.dumps(rows))
    np.testing.assert_array_equal(only, [[0, 1], [2, 2]])
    columns = {"outputs": {"class_map": [padded, padded], "height": [1, 2], "width": [2, 3]}}
    first, second = serving.parse_rest_response(columns)
    assert first.shape == (1, 2) and second.shape == (2, 3)
    (plain,) = serving.parse_rest_response({"predictions": [[[3, 4]]]})
    np.testing.assert_array_equal(plain, [[3, 4]])
    with pytest.raises(RuntimeError, match="TF Serving error: boom"):
        serving.parse_rest_response({"error": "boom"})
    with pytest.raises(ValueError, match="not a TF Serving predict response"):
        serving.parse_rest_response({"foo": 1})


def test_rest_url_and_colorize():
    assert serving.rest_url("h", 8501, "seg") == "http://h:8501/v1/models/seg:predict"
    assert serving.rest_url("h", 1, "seg", 3) == "http://h:1/v1/models/seg/versions/3:predict"
    palette = [[10, 20, 30], [40, 50, 60]]
    picture = serving.colorize(np.array([[0, 1, -1]]), palette)
    np.testing.assert_array_equal(picture, [[[10, 20, 30], [40, 50, 60], [0, 0, 0]]])


@pytest.fixture(scope="module")
def signatures(saved_model_dir):
    return tf.saved_model.load(str(saved_model_dir)).signatures


def test_predict_rest_over_loopback_http(signatures, request_images, expected_maps):
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body))
            reply = tf_serving_emulator.predict(signatures, body)
            data = json.dumps(reply).encode()
            self.send_response(400 if "error" in reply else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = serving.rest_url("127.0.0.1", server.server_address[1], "seg")
        maps = serving.predict_rest(url, request_images[0], timeout=120)
        with pytest.raises(RuntimeError, match=r"image_bytes\[0\] is not a JPEG or PNG"):
            serving.predict_rest(url, [b"GIF89a..."], timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert seen[0][0] == "/v1/models/seg:predict"
    assert seen[0][1]["signature_name"] == "serving_bytes"
    for got, want in zip(maps, expected_maps, strict=True):
        assert got.shape == want.shape and np.mean(got == want) >= 0.999


def test_grpc_request_and_round_trip_over_loopback(signatures, request_images, expected_maps):
    pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api (extra 'serving')")
    import grpc
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    encoded = request_images[0]
    request = serving.grpc_request(encoded, model_name="seg", version=4)
    assert request.model_spec.name == "seg" and request.model_spec.version.value == 4
    assert request.model_spec.signature_name == "serving_bytes"
    assert list(request.output_filter) == ["class_map", "height", "width"]
    tensor = request.inputs["image_bytes"]
    assert tensor.dtype == tf.string.as_datatype_enum
    assert [d.size for d in tensor.tensor_shape.dim] == [3]
    assert list(tf.make_ndarray(tensor)) == encoded

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        """The model server's Predict: run the signature, keep the filtered outputs."""

        def Predict(self, request, context):
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            out = signatures[request.model_spec.signature_name](**inputs)
            response = predict_pb2.PredictResponse()
            for name, value in out.items():
                if not request.output_filter or name in request.output_filter:
                    response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        maps = serving.predict_grpc(f"127.0.0.1:{port}", encoded, model_name="seg", timeout=120)
    finally:
        server.stop(None)
    for got, want in zip(maps, expected_maps, strict=True):
        assert got.shape == want.shape and np.mean(got == want) >= 0.999
