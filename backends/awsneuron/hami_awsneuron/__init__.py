"""hami backend for AWS Neuron devices (Inferentia, Trainium). Installs the ``awsneuron`` entry point of group ``hami.backends``."""
