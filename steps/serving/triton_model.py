"""The Triton python-backend model that ``write_entry`` copies as ``<slot>/<version>/model.py``.

Not imported by the steps: it runs inside Triton's python backend stub (the triton image or
the local stack's triton environment), where ``triton_python_backend_utils`` exists. It runs
``model.onnx`` from the same version folder with onnxruntime on the CPU. Inputs and outputs
are declared in ``config.pbtxt``, which Triton checks before a request reaches this code;
requests that the dynamic batcher grouped are run as one onnxruntime call.
"""

import json
import os

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class TritonPythonModel:
    def initialize(self, args):
        import numpy as np
        import onnxruntime as ort
        import triton_python_backend_utils as pb_utils

        self.np, self.pb = np, pb_utils
        config = json.loads(args["model_config"])
        threads = config.get("parameters", {}).get("intra_op_threads", {}).get("string_value")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or 1)
        options.inter_op_num_threads = 1
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        np, pb = self.np, self.pb
        arrays = [pb.get_input_tensor_by_name(r, INPUT_NAME).as_numpy() for r in requests]
        try:
            joined = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: joined})[0]
        except Exception as exc:  # one bad batch answers an error, the model stays up
            error = pb.TritonError(f"onnxruntime failed: {exc}")
            return [pb.InferenceResponse(error=error) for _ in requests]
        logits = logits.astype(np.float32, copy=False)
        responses, start = [], 0
        for array in arrays:
            part = logits[start : start + len(array)]
            responses.append(pb.InferenceResponse([pb.Tensor(OUTPUT_NAME, part)]))
            start += len(array)
        return responses
