"""Inference Endpoints handler, shipped as `handler.py` beside an exported model.

    handler = EndpointHandler(path)
    handler({"inputs": <image>, "parameters": {"max_new_tokens": 20, "num_beams": 3}})
    # -> [{"generated_text": "..."}]
    handler({"inputs": <image>, "parameters": {"prompt": "Question: what colour is the square? Answer:"}})

An image is raw bytes, a base64 string (optionally a data: URL) or an http(s) URL; `inputs` may be a list of them.
A bad request gets `{"error": "..."}` naming the problem, and the handler keeps serving.
"""

import base64
import binascii

import torch
from transformers import AutoModel, AutoProcessor

ALLOWED_PARAMETERS = {
    "max_new_tokens", "min_new_tokens", "num_beams", "do_sample", "temperature", "top_k", "top_p",
    "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "num_return_sequences", "early_stopping",
}  # fmt: skip


class EndpointHandler:
    def __init__(self, path: str = ""):
        self.model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
        self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)

    @staticmethod
    def _decode(item, index: int):
        """Bytes or URL the processor can read; raises ValueError naming the input."""
        if isinstance(item, (bytes, bytearray)):
            return bytes(item)
        if not isinstance(item, str) or not item:
            kind = type(item).__name__
            raise ValueError(f"inputs[{index}]: expected image bytes, a base64 string or a URL, got {kind}")
        if item.startswith(("http://", "https://")):
            return item
        payload = item.split(",", 1)[1] if item.startswith("data:") else item
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError(f"inputs[{index}]: not valid base64 ({error})") from error

    def __call__(self, data: dict):
        if not isinstance(data, dict) or "inputs" not in data:
            return {"error": "the request needs an 'inputs' field: an image (bytes, base64 or URL) or a list of them"}
        items = data["inputs"] if isinstance(data["inputs"], list) else [data["inputs"]]
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            return {"error": f"'parameters' must be an object of generation settings, got {type(parameters).__name__}"}
        parameters = dict(parameters)  # the prompt is taken out; the caller's request stays as sent
        prompt = parameters.pop("prompt", None)
        if prompt is not None and not isinstance(prompt, str):
            return {"error": f"'prompt' must be a string, got {type(prompt).__name__}"}
        unknown = set(parameters) - ALLOWED_PARAMETERS
        if unknown:
            allowed = sorted(ALLOWED_PARAMETERS | {"prompt"})
            return {"error": f"unsupported parameters {sorted(unknown)}; allowed: {allowed}"}
        images = []
        for index, item in enumerate(items):
            try:
                images.append(self.processor.load_image(self._decode(item, index)))  # errors name the input
            except (ValueError, OSError) as error:  # the processor's ImageLoadError is a ValueError
                message = str(error)
                return {"error": message if message.startswith("inputs[") else f"inputs[{index}]: {message}"}
        # One call for the batch: a reader's lines of different widths are padded together (with a pixel_mask).
        inputs = self.processor(images=images, text=[prompt] * len(images) if prompt else None, return_tensors="pt")
        with torch.inference_mode():
            ids = self.model.generate(**inputs, **parameters)
        return [{"generated_text": text} for text in self.processor.batch_decode(ids, skip_special_tokens=True)]
