"""weightmirror: learning without weight transport, in neuron circuits and on arrays.

A simulator of the weight mirror and Kolen-Pollack mechanisms (Akrout et al.,
"Deep Learning without Weight Transport", NeurIPS 2019) beside backprop,
feedback alignment and sign symmetry, in two modes that share one set of
learning rules:

``weightmirror.circuits``
    the learning rules (``circuits.rules``), the circuit declaration
    (``circuits.spec``) and its Brian2 build (``circuits.brian``);
``weightmirror.models``
    rate mode on arrays (NumPy or CuPy): layers, MLPs, ResNets, the optimiser;
``weightmirror.sims``
    what a user runs: configuration, data sets, training, circuit runs, the CLI;
``weightmirror.figures``
    figures from saved results folders.
"""
__version__ = "0.2.0"
