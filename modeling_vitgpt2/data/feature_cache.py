"""Frozen-vision feature cache (as ClipCap trains): each image's vision-tower output is computed once and reused
across epochs and runs. Entries are keyed by a fingerprint of the vision tower (weights, config, feature choice and
image preprocessing) and the image's bytes, so a different checkpoint or preprocessing never reads stale features."""

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..processing_vitgpt2 import load_image

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


def entry_path(directory: Path, key: str) -> Path:
    return directory / key[:2] / f"{key}.safetensors"


class MissingPixels:
    """Collate step for filling the cache (it runs in DataLoader workers): hashes each image, then decodes and
    preprocesses the ones with no entry yet. It holds only the processor and the folder, never the model, so workers
    stay off the GPU. Returns (every key, the missing keys, their pixel_values or None)."""

    def __init__(self, processor, directory: Path):
        self.processor = processor
        self.directory = directory

    def __call__(self, examples):
        encoded = [image_bytes(example["image"]) for example in examples]
        keys = [hashlib.sha256(data).hexdigest() for data in encoded]
        missing = {key: data for key, data in zip(keys, encoded) if not entry_path(self.directory, key).exists()}
        if not missing:
            return keys, [], None
        pixel_values = self.processor(images=[load_image(data) for data in missing.values()])["pixel_values"]
        return keys, list(missing), pixel_values


class VisionFeatureCache:
    def __init__(self, model, processor, cache_dir=DEFAULT_CACHE_DIR):
        self.model = model
        self.processor = processor
        self.directory = Path(cache_dir) / vision_fingerprint(model, processor.image_processor)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.missing_pixels = MissingPixels(processor, self.directory)
        self.loaded: dict[str, torch.Tensor] = {}  # entries read in this process: epochs after the first skip the disk
        self.computed = 0
        self.reused = 0

    def fill(self, dataset, batch_size: int, num_workers: int = 0, description: str = "vision features") -> None:
        """Computes the features of every image in `dataset` not cached yet, in batches, with a progress bar.
        Images are decoded and preprocessed in `num_workers` DataLoader workers while the vision tower runs here;
        afterwards `features` only reads, so training's own data-loader workers never need the model."""
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=self.missing_pixels
        )
        for _, missing, pixel_values in tqdm(loader, desc=description, unit="batch"):
            # Workers look ahead, so an image repeated in a later batch may have been stored since they looked.
            fresh = [index for index, key in enumerate(missing) if not entry_path(self.directory, key).exists()]
            if fresh:
                self._store([missing[index] for index in fresh], pixel_values[fresh])

    def features(self, images) -> torch.Tensor:
        """Vision features for undecoded images, computing (and storing) only those not cached yet."""
        keys, missing, pixel_values = self.missing_pixels([{"image": image} for image in images])
        if missing:
            if torch.utils.data.get_worker_info() is not None:
                raise RuntimeError(
                    f"{len(missing)} images have no cached vision features in a data-loader worker, which cannot run "
                    "the vision tower: fill the cache first (train.py does) or use --dataloader_num_workers 0"
                )
            self._store(missing, pixel_values)
        self.reused += len(keys) - len(missing)
        return torch.stack([self._load(key) for key in keys])

    def _load(self, key: str) -> torch.Tensor:
        if key not in self.loaded:
            self.loaded[key] = load_file(entry_path(self.directory, key))["features"]
        return self.loaded[key]

    @torch.no_grad()
    def _store(self, keys: list[str], pixel_values: torch.Tensor) -> None:
        was_training = self.model.vision_tower.training
        self.model.vision_tower.eval()
        computed = self.model.get_vision_features(pixel_values).float().cpu()
        self.model.vision_tower.train(was_training)
        for key, tensor in zip(keys, computed):
            path = entry_path(self.directory, key)
            path.parent.mkdir(exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            save_file({"features": tensor.contiguous()}, partial)
            os.replace(partial, path)  # atomic: a killed run never leaves a half-written entry
        self.computed += len(keys)
