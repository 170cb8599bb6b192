"""Denoising diffusion (paper 002): schedules, the denoising loss, jitted samplers, mask IoU."""

from jaxsynth.diffusion.losses import diffusion_loss
from jaxsynth.diffusion.samplers import SamplerOptions, make_sampler, sample_loop
from jaxsynth.diffusion.schedules import Schedule, make_schedule, q_sample
from jaxsynth.diffusion.segmentation import mask_guided_iou, mask_iou, segment_nuclei

__all__ = [
    "Schedule",
    "SamplerOptions",
    "diffusion_loss",
    "make_sampler",
    "make_schedule",
    "mask_guided_iou",
    "mask_iou",
    "q_sample",
    "sample_loop",
    "segment_nuclei",
]
