"""The seeded random streams of a training run.

Every random draw of a run comes from a generator seeded by ``(seed,
PURPOSE, ...)``, so that an epoch's data order and noise depend only on the
seed and the epoch (and a resumed run draws what the uninterrupted one would):

``INIT``    initial weights and feedback weights;
``MIRROR0`` the weight mirror's initial phase;
``ORDER``   each epoch's permutation of the training set, ``(seed, ORDER, epoch)``;
``NOISE``   per-step noise (mirror noise, brSF magnitudes), ``(seed, NOISE, epoch[, step])``;
``METRIC``  the draws of the metrics (brSF's feedback when angles are measured).
"""
INIT, MIRROR0, ORDER, NOISE, METRIC = range(5)
