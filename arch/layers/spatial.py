"""Spatial ("sequence") parallelism for convolutional networks: the height of a feature
map split over a mesh axis.

A CNN calls `split_height(x_BHWC)` on its feature maps (after the stem, after each block);
the constraint names the height axis 'height', which the loop's default rules map to the
`sequence` mesh axis (train/mesh.py), as a Transformer's 'length' is. With `mesh.sequence
= P > 1` each device then holds H/P rows of every map, and XLA's SPMD partitioner turns
each k x k convolution into the local convolution plus a halo exchange of the (k-1)/2 rows
its neighbours own (collective-permutes), pooling and striding included. Reductions over
the image stay global: BatchNorm's statistics under jit are a mean over the whole global
(B, H, W) array, which the partitioner completes with an all-reduce over the data and
sequence axes, so the loss equals one device's (tests/test_scaleout.py, dp2_sp4). The
width and channel axes are left to XLA (unconstrained), so tensor parallelism of the
channels composes. Without rules or a mesh (a model used in one's own code) it is a no-op.

Which CNNs call it: ResNet (arch/vision/resnet.py) and ConvMixer (arch/vision/convmixer.py).
Measured 2026-12-07 on 8 simulated devices, DP=2 x SP=4, 20 steps against one device: the
tiny ResNet (widths 8/16) within 1.0e-7 relative, its compiled step holding
collective-permutes (none under DP=8); ConvMixer's tiny net within 1.1e-7; each resumed
bit for bit (tests/test_scaleout.py, tests/test_cnn_parallel.py).
A map's height must divide by the sequence axis at every resolution it is constrained at
(a 32x32 ResNet input with 2 stages: 32 and 16 rows; 4 ways divide both).

Dimension key: B batch, H height, W width, C channels.
"""

import flax.linen as nn
from jax.sharding import PartitionSpec

HEIGHT = 'height'  # the logical name of a feature map's rows
_FREE = PartitionSpec.UNCONSTRAINED
# A feature map's logical axes: batch over the data axes, rows over 'height', the rest free.
MAP_AXES = ('batch', HEIGHT, _FREE, _FREE)


def split_height(x_BHWC):
  """`x_BHWC` with its batch over the data axes and its rows over the 'height' rule's axis;
  width and channels as XLA propagates them."""
  return nn.with_logical_constraint(x_BHWC, MAP_AXES)
