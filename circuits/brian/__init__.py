"""Circuit mode: a :class:`circuits.spec.CircuitSpec` built in Brian2.

- :mod:`circuits.brian.network`: :class:`~circuits.brian.network.BrianCircuit`
  (populations, synapses, gated plasticity, weights in and out as NumPy
  matrices, monitors);
- :mod:`circuits.brian.plasticity`: the plasticity of the feedback synapses
  B, one builder per rule, registered by the rule's config name;
- :mod:`circuits.brian.devices`: the ``--device`` values (runtime, cython,
  cpp, cuda) chosen in one place.
"""
