"""Imported into a template by a test: asks the CUDA driver how many devices there are, as some libraries do when
imported (transformers, through torchao), which leaves every later fork of the process unable to use CUDA."""

import torch

torch._C._cuda_getDeviceCount()
