"""NumPy building blocks for the theory chapters (part 1 of the book).

Every idea of part 1 is written here once, in plain NumPy, small enough to read in a minute:

- ``layers``: activations and their derivatives, losses (numerically stable softmax
  cross-entropy next to the naive one that overflows), dense, 2-D convolution with padding and
  stride, max pooling, parameter counting, image filters.
- ``mlp``: a tiny multilayer perceptron with a hand-written backward pass; weight
  initialisations (zeros, N(0, 1), Glorot, He) and the gradient flow they give.
  ``layers`` also writes a convolution as a dense matrix and computes receptive fields.
- ``gradcheck``: finite-difference gradients and the relative error used to compare gradients.
- ``descent``: batch, stochastic and mini-batch gradient descent on one small problem, with the
  loss curves and parameter paths the chapters plot, and learning-rate sweeps; momentum,
  Nesterov and Adam (``SGD``, ``Adam``) and learning-rate schedules, as Keras computes them;
  the class-weighted cross-entropy of Keras's ``class_weight``.
- ``regularise``: L1/L2 penalties, dropout, batch normalisation and early stopping in NumPy, and
  the small Keras experiment that compares them.
- ``toy_data``: small data sets (a noisy line, two moons, hand-crafted features of synthetic
  cell images, small cell images).
- ``classify``: confusion counts and the metrics built on them (accuracy, sensitivity,
  specificity, balanced accuracy, weighted F1), the C-NMC class counts, balanced class weights
  and the scores of every decision threshold.
- ``figures``: the theory chapters' plots and style (``use_style``: a colour-blind-safe palette
  with line styles as a second cue, figures at most ``MAX_WIDTH`` inches wide at ``DPI``).
- ``keras_ref``: the same computations done by Keras, to check the NumPy versions against.
  It is the only module here that imports Keras, and only inside its functions.

Import the modules you need (``from allnet_lib.theory import layers, mlp``); none of them
imports Keras or TensorFlow at import time.
"""

__all__ = ["classify", "descent", "figures", "gradcheck", "keras_ref", "layers", "mlp", "regularise",
           "toy_data"]
