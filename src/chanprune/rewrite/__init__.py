"""Stage 5, rewrite and verify: the graph + liveness + a layout policy -> a physically smaller
``fx.GraphModule``, checked against the masked model.

``rewriter`` builds the pruned graph (op by op, through the rules); ``inplace`` restores in-place
activations; ``writers`` adds narrower residual operands into the stream, in place where safe;
``verify`` compares outputs and names the first diverging node; ``ideal`` gives the copy-free
reference an export of the same masks could reach at best.
"""

from .ideal import ideal
from .rewriter import GROUP_QUANTUM, Copy, RewriteResult, rewrite
from .verify import compare, verify

__all__ = ["GROUP_QUANTUM", "Copy", "RewriteResult", "compare", "ideal", "rewrite", "verify"]
