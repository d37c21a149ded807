"""vitgpt2: a CLIP/ViT → MLP → GPT-2 image captioner as a Hub-native transformers model.

Importing the package registers the model, processor and `image-to-text` pipeline with transformers' Auto classes,
so `save_pretrained` writes a folder that loads with `trust_remote_code=True` anywhere.
"""

from transformers import AutoModel, pipelines

from .configuration_vitgpt2 import VitGpt2Config
from .modeling_vitgpt2 import VitGpt2ForCaptioning, VitGpt2Projector
from .pipeline_vitgpt2 import TASK, VitGpt2CaptioningPipeline
from .processing_vitgpt2 import ImageLoadError, VitGpt2Processor, load_image

VitGpt2Config.register_for_auto_class()
VitGpt2ForCaptioning.register_for_auto_class("AutoModel")
VitGpt2Processor.register_for_auto_class()
pipelines.PIPELINE_REGISTRY.register_pipeline(
    TASK, pipeline_class=VitGpt2CaptioningPipeline, pt_model=AutoModel, type="multimodal"
)

__all__ = [
    "ImageLoadError",
    "VitGpt2CaptioningPipeline",
    "VitGpt2Config",
    "VitGpt2ForCaptioning",
    "VitGpt2Processor",
    "VitGpt2Projector",
    "load_image",
]
