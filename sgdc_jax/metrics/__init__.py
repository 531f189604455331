"""Segmentation metrics: per-image NumPy metrics (Dice ... HD95, clDice) and on-device Dice/IoU.

- `surface`: MedPy borders and surface distances, HD95, ASSD, normalised surface Dice (NSD);
  the conventions (MedPy's HD95, MONAI's NSD, how they differ from MONAI's HD95) are there.
- `boundary_scores`: boundary bands, Boundary IoU (Cheng et al., 2021), boundary F-score.
- `topology`: the skeleton (Guo-Hall thinning) and centreline Dice (clDice, Shit et al., 2021).
- `per_image`: the full per-image set (`image_metrics`, optionally inside a region of interest)
  and its average (`summarize`).
- `device`: jittable Dice/IoU counts (`device_dice_iou`, `dice_iou_from_counts`).
- `inputs`: the argument checks they share.

Every public name is served from here too: `from sgdc_jax import metrics; metrics.hd95(...)`.
"""
from sgdc_jax.metrics.boundary_scores import (DEFAULT_BOUNDARY_IOU_RATIO, boundary_band,
                                              boundary_dilation, boundary_f_score, boundary_iou)
from sgdc_jax.metrics.device import device_dice_iou, dice_iou_from_counts
from sgdc_jax.metrics.inputs import EMPTY_POLICIES
from sgdc_jax.metrics.per_image import METRIC_NAMES, image_metrics, summarize
from sgdc_jax.metrics.surface import (DEFAULT_NSD_TOLERANCE, HD95_CONVENTION, assd, border,
                                      hd95, image_diagonal, surface_dice, surface_distances)
from sgdc_jax.metrics.topology import centreline_scores, cldice, skeleton

__all__ = [
    'DEFAULT_BOUNDARY_IOU_RATIO', 'DEFAULT_NSD_TOLERANCE', 'EMPTY_POLICIES', 'HD95_CONVENTION',
    'METRIC_NAMES', 'assd', 'border', 'boundary_band', 'boundary_dilation', 'boundary_f_score',
    'boundary_iou', 'centreline_scores', 'cldice', 'device_dice_iou', 'dice_iou_from_counts',
    'hd95', 'image_diagonal', 'image_metrics', 'skeleton', 'summarize', 'surface_dice',
    'surface_distances',
]
