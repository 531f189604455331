"""Segmentation networks: the ResNet encoders, `SGDCNet`, and torchvision weight conversion."""
from sgdc_jax.models.resnet import ResNet, stage_channels
from sgdc_jax.models.resnet_convert import load_pretrained_encoder, torchvision_resnet_to_flax
from sgdc_jax.models.sgdc_net import (SGDCNet, build_model, default_model_config,
                                      validate_model_config)

__all__ = ['ResNet', 'SGDCNet', 'build_model', 'default_model_config', 'load_pretrained_encoder',
           'stage_channels', 'torchvision_resnet_to_flax',
           'validate_model_config']
