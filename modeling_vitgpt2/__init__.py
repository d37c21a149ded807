"""vitgpt2: a CLIP/ViT → MLP → GPT-2 image captioner as a Hub-native transformers model.

Importing the package registers the model, processor and `image-to-text` pipeline with transformers' Auto classes,
so `save_pretrained` writes a folder that loads with `trust_remote_code=True` anywhere.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, pipelines

from .configuration_vitgpt2 import VitGpt2Config
from .modeling_vitgpt2 import VitGpt2ForCaptioning, VitGpt2Projector
from .pipeline_vitgpt2 import TASK, VitGpt2CaptioningPipeline
from .processing_vitgpt2 import ImageLoadError, VitGpt2LineImageProcessor, VitGpt2Processor, load_image

VitGpt2Config.register_for_auto_class()
# Known here by model type: loading a saved folder (AutoTokenizer reads its config.json too) needs no remote code.
AutoConfig.register(VitGpt2Config.model_type, VitGpt2Config, exist_ok=True)
VitGpt2ForCaptioning.register_for_auto_class("AutoModel")
VitGpt2Processor.register_for_auto_class()
VitGpt2LineImageProcessor.register_for_auto_class("AutoImageProcessor")
# Found by name when a saved reader is loaded here without trust_remote_code.
AutoImageProcessor.register(
    VitGpt2Config,
    image_processor_classes={"pil": VitGpt2LineImageProcessor, "torchvision": VitGpt2LineImageProcessor},
    exist_ok=True,
)
pipelines.PIPELINE_REGISTRY.register_pipeline(
    TASK, pipeline_class=VitGpt2CaptioningPipeline, pt_model=AutoModel, type="multimodal"
)

__all__ = [
    "ImageLoadError",
    "VitGpt2CaptioningPipeline",
    "VitGpt2Config",
    "VitGpt2ForCaptioning",
    "VitGpt2LineImageProcessor",
    "VitGpt2Processor",
    "VitGpt2Projector",
    "load_image",
]
