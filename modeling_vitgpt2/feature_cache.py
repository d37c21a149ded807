"""Frozen-vision feature cache (as ClipCap trains): each image's vision-tower output is computed once and reused
across epochs and runs. Entries are keyed by a fingerprint of the vision tower (weights, config, feature choice and
image preprocessing) and the image's bytes, so a different checkpoint or preprocessing never reads stale features."""

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .processing_vitgpt2 import load_image

DEFAULT_CACHE_DIR = Path(os.environ.get("VITGPT2_CACHE", Path.home() / ".cache" / "vitgpt2")) / "vision_features"


def vision_fingerprint(model, image_processor) -> str:
    digest = hashlib.sha256()
    config = model.config
    settings = {
        "vision_config": config.vision_config.to_dict(),
        "vision_feature": config.vision_feature,
        "vision_feature_layer": config.vision_feature_layer,
        "image_processor": image_processor.to_dict(),
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.vision_tower.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def image_bytes(image) -> bytes:
    """The encoded bytes of a `datasets` undecoded image (`{"bytes", "path"}`; the path may be a URL)."""
    if image.get("bytes"):
        return image["bytes"]
    if image["path"].startswith(("http://", "https://")):
        from huggingface_hub.utils import get_session

        response = get_session().get(image["path"])
        response.raise_for_status()
        return response.content
    with open(image["path"], "rb") as file:
        return file.read()


class VisionFeatureCache:
    def __init__(self, model, processor, cache_dir=DEFAULT_CACHE_DIR):
        self.model = model
        self.processor = processor
        self.directory = Path(cache_dir) / vision_fingerprint(model, processor.image_processor)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.computed = 0
        self.reused = 0

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    @torch.no_grad()
    def features(self, images) -> torch.Tensor:
        """Vision features for undecoded images, computing (and storing) only those not cached yet."""
        encoded = [image_bytes(image) for image in images]
        keys = [hashlib.sha256(data).hexdigest() for data in encoded]
        missing = [index for index, key in enumerate(keys) if not self._path(key).exists()]
        if missing:
            pixel_values = self.processor(images=[load_image(encoded[index]) for index in missing])["pixel_values"]
            was_training = self.model.vision_tower.training
            self.model.vision_tower.eval()
            computed = self.model.get_vision_features(pixel_values).float().cpu()
            self.model.vision_tower.train(was_training)
            for index, tensor in zip(missing, computed):
                path = self._path(keys[index])
                path.parent.mkdir(exist_ok=True)
                partial = path.with_suffix(f".{os.getpid()}.tmp")
                save_file({"features": tensor.contiguous()}, partial)
                os.replace(partial, path)  # atomic: a killed run never leaves a half-written entry
        self.computed += len(missing)
        self.reused += len(keys) - len(missing)
        return torch.stack([load_file(self._path(key))["features"] for key in keys])
