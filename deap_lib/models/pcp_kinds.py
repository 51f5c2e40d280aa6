"""The kinds of PCP unit a residual block can carry: where the identity-initialised 1x1 convolutions sit around
the block's internal 3x3 conv (docs/methods/deap.rst §PCP unit).

A kind names at most two modules: ``pre``, the input-side pruner between conv1 (+BN, ReLU) and the 3x3 conv
(its columns are conv1's output channels, C1), and ``post``, the output-side one after the 3x3 conv + BN and
before the ReLU (its rows are conv3's input channels, C3). Both are bias-free 1x1 convolutions starting as
the identity, so the network computes exactly what the plain one does, and both merge into the 3x3 conv at
absorption (``K = P2 . K2 . P1``). The blocks build, cut, fuse and run any registered kind
(:mod:`deap_lib.models.blocks`); a new kind is one :func:`register_pcp_kind` call, here or in a plugin:

* ``deap``: both (DEAP's pruner 1 and pruner 2);
* ``cdd``: ``post`` only, named ``compactor`` (CDD's; conv1's width stays fixed).

A basic block has one internal width, so it carries one module, output-side, under the kind's ``post`` name
(or its ``pre`` name for a kind without one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from ..registry import Registry


@dataclass(frozen=True)
class PcpKind:
    """One kind of PCP unit: the attribute names of its input-side (``pre``) and output-side (``post``)
    pruners in a bottleneck, ``None`` where it has none."""

    name: str
    pre: Optional[str]
    post: Optional[str]

    def __post_init__(self) -> None:
        if self.pre is None and self.post is None:
            raise ValueError(f"PCP kind {self.name!r}: needs a pre or a post pruner (or both)")
        if self.pre is not None and self.pre == self.post:
            raise ValueError(f"PCP kind {self.name!r}: pre and post need different names, got {self.pre!r} twice")

    @property
    def basic_name(self) -> str:
        """The name of a basic block's single (output-side) pruner."""
        return self.post or self.pre  # type: ignore[return-value]


#: every PCP kind by name (``None`` is the plain block, not a kind)
PCP_KINDS: Registry = Registry("PCP kind")


def register_pcp_kind(kind: PcpKind) -> PcpKind:
    """Register ``kind`` under its name (an error names a name registered twice)."""
    PCP_KINDS.register(kind.name, kind)
    return kind


def pcp_kind(name: str) -> PcpKind:
    """The registered kind ``name``; a KeyError listing the valid names otherwise."""
    return PCP_KINDS.get(name)


def pruner_names() -> Tuple[str, ...]:
    """Every attribute name a registered kind gives a pruner (to tell pruner weights from the rest)."""
    names = []
    for name in PCP_KINDS.names():
        k = PCP_KINDS.get(name)
        names += [n for n in (k.pre, k.post) if n is not None]
    return tuple(dict.fromkeys(names))


register_pcp_kind(PcpKind("deap", pre="pruner1", post="pruner2"))
register_pcp_kind(PcpKind("cdd", pre=None, post="compactor"))
