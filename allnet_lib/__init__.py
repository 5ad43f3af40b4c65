"""allnet: a small library that teaches deep learning on the C-NMC 2019 leukemia cell images.

Modules are imported on demand (``from allnet_lib import reader``) so that the data layer
starts fast and never pulls in TensorFlow unless a pipeline or model needs it.
"""

import os as _os

__version__ = "0.1.0"

#: oneDNN's fast CPU kernels on wherever TensorFlow starts after this package is imported (a
#: user's own script included, not only the chapters, the CLI and ./run): TensorFlow leaves them
#: off on CPUs without AVX-512/AMX, and training is then slower. An explicit setting is kept.
#: Only takes effect if TensorFlow is not imported yet. (notebook.TF_ENV builds on it.)
ONEDNN_ENV = {"TF_ENABLE_ONEDNN_OPTS": "1"}
for _key, _value in ONEDNN_ENV.items():
    _os.environ.setdefault(_key, _value)
