"""allnet: a small library that teaches deep learning on the C-NMC 2019 leukemia cell images.

Modules are imported on demand (``from allnet_lib import reader``) so that the data layer
starts fast and never pulls in TensorFlow unless a pipeline or model needs it.
"""

__version__ = "0.1.0"
