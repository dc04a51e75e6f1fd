"""What TensorFlow Serving does with a predict request, for tests: the model server binary
cannot be installed here, so the tests feed the SavedModel what the server would.

Row format (`"instances"`), as in TF Serving's REST API: the inputs of all instances are
stacked, `{"b64": ...}` values are base64-decoded into strings, the signature runs, and each
output's row i goes to prediction i. A failing request gives `{"error": message}` (TF
Serving answers HTTP 400 with that body); `error_type` is added for the tests only.

Run as a script it loads the SavedModel in a fresh process, without keras_seg:
    python tf_serving_emulator.py SAVED_MODEL_DIR REQUESTS.json RESPONSES.json
"""

from __future__ import annotations

import base64
import json
import sys

import tensorflow as tf


def _value(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    return value


def predict(signatures, body: dict) -> dict:
    """The REST response body for request `body`."""
    signature = signatures[body.get("signature_name", "serving_default")]
    instances = body["instances"]
    spec = signature.structured_input_signature[1]
    inputs = {}
    for name, tensor_spec in spec.items():
        values = [_value(instance[name]) for instance in instances]
        inputs[name] = tf.constant(values, tensor_spec.dtype)
    try:
        outputs = signature(**inputs)
    except tf.errors.OpError as e:
        return {"error": e.message, "error_type": type(e).__name__}
    outputs = {k: v.numpy() for k, v in outputs.items()}
    rows = [{k: v[i].tolist() for k, v in outputs.items()} for i in range(len(instances))]
    return {"predictions": rows}


def main(argv: list[str]) -> None:
    saved_model_dir, requests_file, responses_file = argv
    loaded = tf.saved_model.load(saved_model_dir)
    requests = json.loads(open(requests_file).read())
    responses = {name: predict(loaded.signatures, body) for name, body in requests.items()}
    metadata = loaded.signatures["metadata"]()
    responses["_metadata"] = {
        "class_names": [n.decode() for n in metadata["class_names"].numpy()],
        "palette": metadata["palette"].numpy().tolist(),
        "keras_seg_imported": "keras_seg" in sys.modules,
    }
    with open(responses_file, "w") as f:
        json.dump(responses, f)


if __name__ == "__main__":
    main(sys.argv[1:])
