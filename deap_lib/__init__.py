"""deap_lib: the thin library behind the DEAP reproduction study.

Sub-modules (one concept each): ``data`` (synthetic VeRi, parsers, sampler, transforms), ``models``
(ConvBN ResNets with PCP pruners and re-ID heads), ``losses``, ``absorb`` (prune + re-parameterise),
``evaluation`` (mAP / CMC / mINP, bootstrap intervals), ``complexity`` (params, MACs, latency),
``engine`` (training loop, checkpoints, DDP), ``methods`` (named recipes and presets).
"""

__version__ = "0.1.0"
