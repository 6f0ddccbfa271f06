"""The radix tree of token windows that `PrefixSharingLM` walks: a shared prefix is one node, run once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per cache layer: keys, values of shape (1, H, T, D)


@dataclass(eq=False)
class Node:
    """A run of tokens `seqs[rep][start:end]` shared by every window in this subtree."""

    start: int
    end: int
    rep: int
    parent: Node | None = None
    terminal: int = -1  # the window that ends here, if any
    children: list[Node] = field(default_factory=list)
    # Scored positions inside this node: offset in the segment, target token, request index.
    needs: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def width(self) -> int:
        return self.end - self.start


@dataclass(eq=False)
class State:
    """The KV cache of a prefix of `length` tokens, as a chain of per-node slices (no copy of the parent)."""

    length: int
    kv: KV
    parent: State | None = None

    def materialize(self, layers: Sequence[DynamicLayer]) -> KV:
        """Per layer, the keys/values a cache layer of that kind holds after this prefix."""
        chain = []
        state: State | None = self
        while state is not None:
            if state.kv:  # the root holds no tokens
                chain.append(state.kv)
            state = state.parent
        chain.reverse()
        out = []
        for i, layer in enumerate(layers):
            keys = torch.cat([kv[i][0] for kv in chain], dim=-2)
            values = torch.cat([kv[i][1] for kv in chain], dim=-2)
            if isinstance(layer, DynamicSlidingWindowLayer):
                keys, values = (
                    keys[:, :, 1 - layer.sliding_window :],
                    values[:, :, 1 - layer.sliding_window :],
                )
            out.append((keys, values))
        return out


def radix_tree(seqs: list[tuple[int, ...]]) -> tuple[Node, list[Node]]:
    """The compressed trie of distinct, lexicographically sorted `seqs`, and the node where each one ends."""
    root = Node(0, 0, -1)
    stack, ends = [root], []
    previous: np.ndarray | None = None
    for i, seq in enumerate(seqs):
        current = np.asarray(seq, dtype=np.int64)
        lcp = 0
        if previous is not None:
            m = min(len(previous), len(current))
            diff = np.flatnonzero(previous[:m] != current[:m])
            lcp = int(diff[0]) if len(diff) else m
        while len(stack) > 1 and stack[-1].start >= lcp:
            stack.pop()
        top = stack[-1]
        if top.end > lcp:  # the new window branches inside `top`: split it at the branch point
            tail = Node(lcp, top.end, top.rep, top, top.terminal, top.children)
            for child in tail.children:
                child.parent = tail
            if top.terminal >= 0:
                ends[top.terminal] = tail
            top.end, top.terminal, top.children = lcp, -1, [tail]
        # Sorted distinct windows: a window that is a prefix of another comes first, so len(seq) > lcp.
        leaf = Node(lcp, len(seq), i, top, i)
        top.children.append(leaf)
        stack.append(leaf)
        ends.append(leaf)
        previous = current
    return root, ends


def tree_tokens(root: Node) -> int:
    """Tokens in the tree: what one pass over it computes (padding aside)."""
    total, stack = 0, [root]
    while stack:
        node = stack.pop()
        total += node.width
        stack += node.children
    return total


def register(end: Node, length: int, cont: list[int], j: int) -> None:
    """Attach request j's scored positions (its window's last len(cont)) to the nodes that hold them."""
    first = length - len(cont)
    node: Node | None = end
    # Walk up from the window's end to the node holding its first scored position.
    while node is not None and node.end > first:
        for pos in range(max(node.start, first), node.end):
            node.needs.append((pos - node.start, cont[pos - first], j))
        node = node.parent
