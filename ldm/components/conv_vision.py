"""A convolutional image tower for CLIP, as in CLIP's own ResNet variants.

Why this file exists: transformers' CLIPModel only has a ViT image tower, and on small images a
small ViT learns shape very slowly: on the 32 px shapes data a 3-stage ResNet learned shape in less
time than a 4-layer ViT took to stall far below it, at several times the steps a second
(figures in docs/benchmarks.md).

The network is transformers' ResNetModel; the dual-encoder is transformers'
VisionTextDualEncoderModel (image tower + CLIPTextModel + projections + learned temperature, the
same contrastive model as CLIPModel). This file only gives the ResNet what that class expects of
an image tower: a `hidden_size` and a (B, hidden_size) pooled output (ResNet's is (B, C, 1, 1)),
plus the `image_size` the rest of ldm reads from any CLIP's vision config. Registering the config
with transformers' Auto classes lets `AutoModel.from_pretrained(RUN/clip)` rebuild it.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, AutoModel, ResNetConfig, ResNetModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.resnet.modeling_resnet import ResNetPreTrainedModel

CONV_VISION = "ldm-conv-vision"


@strict
class ConvVisionConfig(ResNetConfig):
    model_type = CONV_VISION
    image_size: int = 32
    hidden_size: int | None = None  # always the last stage's width; stored so readers need not know

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.hidden_size = self.hidden_sizes[-1]


class ConvVisionModel(ResNetPreTrainedModel):
    config_class = ConvVisionConfig

    def __init__(self, config: ConvVisionConfig):
        super().__init__(config)
        self.resnet = ResNetModel(config)
        self.post_init()

    def forward(self, pixel_values, **kwargs) -> BaseModelOutputWithPooling:
        # kwargs: the attention/hidden-state flags the dual encoder passes to any tower; a ResNet
        # has no attention, so they have nothing to change.
        out = self.resnet(pixel_values)
        return BaseModelOutputWithPooling(last_hidden_state=out.last_hidden_state,
                                          pooler_output=out.pooler_output.flatten(1))


AutoConfig.register(CONV_VISION, ConvVisionConfig)
AutoModel.register(ConvVisionConfig, ConvVisionModel)
