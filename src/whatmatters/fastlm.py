"""An lm-eval model that never recomputes a shared prefix: same requests, same log-likelihoods as `HFLM`.

Stock `HFLM` runs every (context + continuation) in full: a 10-shot HellaSwag doc costs its ~900-token
context four times, once per ending, and a few-shot preamble shared by every doc is recomputed for each.
`PrefixSharingLM` keeps HFLM's front end (tokenisation, left truncation at `max_length`, rolling windows,
`generate_until`) and replaces only the scoring core, `_loglikelihood_tokens`:

1. each request becomes the exact token window HFLM would feed, `(context + continuation)[-(L+1):][:-1]`,
   whose last `len(continuation)` positions are scored;
2. the distinct windows go into a radix tree (sorted, adjacent longest common prefixes): a node is a run of
   tokens shared by every window below it;
3. the tree is walked depth first; the children of a node are computed in batches of `batch_size` rows on
   top of the node's KV cache (repeated per row, never recomputed), right-padded as HFLM pads them, and a
   child with children of its own keeps only its new KV slice: memory holds the current root-to-node
   chain and one batch of slices per level of it, never the whole tree's cache.

Caches are built from `DynamicCache(config=model.config)`, as the model's own forward builds them: a
pruned model (`whatmatters.surgery.apply_plan`) gets one layer per kept attention, and sliding-window
layers (Gemma2/3) keep their last `sliding_window - 1` tokens. `tokens_computed` counts the positions run
through the model (`tokens_padded` the padding), so tests and `benchmarks/bench_eval.py` can check that a
shared prefix is computed once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

log = logging.getLogger(__name__)
Request = tuple[tuple[str, str] | None, list[int], list[int]]
KV = list[tuple[torch.Tensor, torch.Tensor]]  # per cache layer: keys, values of shape (1, H, T, D)
CPU_AUTO_BATCH = 16  # rows per forward for batch_size="auto" off CUDA, where HFLM's probing takes minutes


@dataclass(eq=False)
class _Node:
    """A run of tokens `seqs[rep][start:end]` shared by every window in this subtree."""

    start: int
    end: int
    rep: int
    parent: _Node | None = None
    terminal: int = -1  # the window that ends here, if any
    children: list[_Node] = field(default_factory=list)
    # Scored positions inside this node: offset in the segment, target token, request index.
    needs: list[tuple[int, int, int]] = field(default_factory=list)


@dataclass(eq=False)
class _State:
    """The KV cache of a prefix of `length` tokens, as a chain of per-node slices (no copy of the parent)."""

    length: int
    kv: KV
    parent: _State | None = None

    def materialize(self, layers: Sequence[DynamicLayer]) -> KV:
        """Per layer, the keys/values a cache layer of that kind holds after this prefix."""
        chain = []
        state: _State | None = self
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


def radix_tree(seqs: list[tuple[int, ...]]) -> tuple[_Node, list[_Node]]:
    """The compressed trie of distinct, lexicographically sorted `seqs`, and the node where each one ends."""
    root = _Node(0, 0, -1)
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
            tail = _Node(lcp, top.end, top.rep, top, top.terminal, top.children)
            for child in tail.children:
                child.parent = tail
            if top.terminal >= 0:
                ends[top.terminal] = tail
            top.end, top.terminal, top.children = lcp, -1, [tail]
        # Sorted distinct windows: a window that is a prefix of another comes first, so len(seq) > lcp.
        leaf = _Node(lcp, len(seq), i, top, i)
        top.children.append(leaf)
        stack.append(leaf)
        ends.append(leaf)
        previous = current
    return root, ends


def _tokens(root: _Node) -> int:
    """Tokens in the tree: what one pass over it computes (padding aside)."""
    total, stack = 0, [root]
    while stack:
        node = stack.pop()
        total += node.end - node.start
        stack += node.children
    return total


class PrefixSharingLM(HFLM):
    """`HFLM` over an in-memory model whose log-likelihoods compute every shared prefix once.

    Construct it as HFLM: `PrefixSharingLM(pretrained=model, tokenizer=tok, batch_size=16)`. `batch_size`
    is the number of rows per forward (a node's children); "auto" probes on CUDA as HFLM does and uses
    16 rows elsewhere.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tokens_computed = 0  # real token positions run through the model
        self.tokens_padded = 0  # right padding in those batches
        self._auto_rows: int | None = None

    def _loglikelihood_tokens(
        self,
        requests: list[Request],
        disable_tqdm: bool = False,
        override_bs: int | None = None,
    ) -> list[tuple[float, bool]]:
        if self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        self._check_cache_layout()
        windows, targets, truncated = [], [], 0
        for _, context_enc, continuation_enc in requests:
            # HFLM's own preconditions and truncation: the same window, the same scored positions.
            assert len(context_enc) > 0 and 0 < len(continuation_enc) <= self.max_length
            truncated += len(context_enc) + len(continuation_enc) > self.max_length + 1
            windows.append(tuple((context_enc + continuation_enc)[-(self.max_length + 1) :][:-1]))
            targets.append(continuation_enc)
        if truncated:
            log.warning(
                f"{truncated} of {len(requests)} requests exceed max_length={self.max_length}: "
                "truncated from the left, as HFLM truncates them"
            )
        distinct = sorted(set(windows))
        root, ends = radix_tree(distinct)
        index = {w: i for i, w in enumerate(distinct)}
        for j, (window, cont) in enumerate(zip(windows, targets, strict=True)):
            self._register(ends[index[window]], len(window), cont, j)
        self._seqs = distinct
        self._logprob = torch.zeros(len(requests), dtype=torch.float64)
        self._greedy = torch.ones(len(requests), dtype=torch.bool)
        self._rows = override_bs or self._batch_rows()
        self._pbar = tqdm(
            total=_tokens(root),
            disable=disable_tqdm or self.rank != 0,
            desc="Prefix-shared tokens",
            unit="tok",
        )
        try:
            with torch.no_grad():
                self._expand(root, _State(0, []))
            res = [(float(lp), bool(g)) for lp, g in zip(self._logprob, self._greedy, strict=True)]
        finally:
            self._pbar.close()
            del self._seqs, self._logprob, self._greedy, self._pbar  # the tree's memory goes with them
        for (request_str, _, _), answer in zip(requests, res, strict=True):
            if request_str is not None:  # rolling windows are cached per document by loglikelihood_rolling
                self.cache_hook.add_partial("loglikelihood", request_str, answer)
        return res

    def _batch_rows(self) -> int:
        if self.batch_size != "auto":
            return int(self.batch_size)
        if self._auto_rows is None:
            self._auto_rows = self._detect_batch_size() if self.device.type == "cuda" else CPU_AUTO_BATCH
        return self._auto_rows

    def _check_cache_layout(self) -> None:
        """Refuse cache kinds whose slices we cannot copy (quantized, linear attention) before any forward."""
        kinds = {type(layer) for layer in DynamicCache(config=self.model.config).layers}
        unsupported = kinds - {DynamicLayer, DynamicSlidingWindowLayer}
        if unsupported:
            names = ", ".join(sorted(k.__name__ for k in unsupported))
            raise ValueError(
                "PrefixSharingLM supports full and sliding-window KV caches, but this model's cache has "
                f"{names}; evaluate it with lm_eval's HFLM instead"
            )

    @staticmethod
    def _register(end: _Node, length: int, cont: list[int], j: int) -> None:
        """Attach request j's scored positions (its window's last len(cont)) to the nodes that hold them."""
        first = length - len(cont)
        node: _Node | None = end
        # Walk up from the window's end to the node holding its first scored position.
        while node is not None and node.end > first:
            for pos in range(max(node.start, first), node.end):
                node.needs.append((pos - node.start, cont[pos - first], j))
            node = node.parent

    def _expand(self, node: _Node, state: _State) -> None:
        """Compute every child of `node` on top of `state` (the cache of `node`'s prefix), then recurse."""
        children = sorted(node.children, key=lambda c: c.end - c.start, reverse=True)
        base = state.materialize(DynamicCache(config=self.model.config).layers) if state.length else None
        for i in range(0, len(children), self._rows):
            batch = children[i : i + self._rows]
            slices = self._forward(batch, state.length, base)
            for child, kv in zip(batch, slices, strict=True):
                if child.children:
                    self._expand(child, _State(child.end, kv, state))

    def _forward(self, batch: list[_Node], past: int, base: KV | None) -> list[KV]:
        """One forward of `batch`'s segments over a `past`-token prefix; the new KV slice of inner nodes."""
        lengths = [c.end - c.start for c in batch]
        width = max(lengths)
        # Right padding, as HFLM pads: causal attention keeps it out of every real position.
        rows = [list(self._seqs[c.rep][c.start : c.end]) + [0] * (width - c.end + c.start) for c in batch]
        ids = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.tokens_computed += sum(lengths)
        self._pbar.update(sum(lengths))
        self.tokens_padded += len(batch) * width - sum(lengths)

        cache = DynamicCache(config=self.model.config)
        keep_kv = any(c.children for c in batch)
        held = []  # tokens each layer held before this forward: new slices start there
        for i, layer in enumerate(cache.layers):
            if base is not None:
                keys, values = base[i]
                layer.lazy_initialization(keys, values)
                layer.keys = keys.expand(len(batch), -1, -1, -1)
                layer.values = values.expand(len(batch), -1, -1, -1)
                if isinstance(layer, DynamicSlidingWindowLayer):
                    layer.cumulative_length = past
            held.append(layer.keys.shape[-2] if base is not None else 0)
            if keep_kv and isinstance(layer, DynamicSlidingWindowLayer):
                layer.activate_past_recording()  # keep the padded batch's full states to slice rows from

        positions = sorted({pos for c in batch for pos, _, _ in c.needs})
        with torch.autocast(
            device_type=self.device.type,
            dtype=self.mixed_precision_dtype,
            enabled=self.mixed_precision_dtype is not None,
        ):
            logits = self.model(
                input_ids=ids,
                past_key_values=cache,
                use_cache=True,
                position_ids=torch.arange(past, past + width, device=self.device).unsqueeze(0),
                logits_to_keep=torch.tensor(positions or [0], dtype=torch.long, device=self.device),
            ).logits  # (B, len(positions), V): only the scored positions reach the vocabulary projection
        column = {pos: k for k, pos in enumerate(positions)}
        for row, child in enumerate(batch):
            if child.needs:
                self._score(logits[row], child.needs, column)

        slices = []
        for row, (child, n) in enumerate(zip(batch, lengths, strict=True)):
            if not child.children:
                slices.append([])
                continue
            slices.append(
                [
                    (
                        layer.keys[row : row + 1, :, h : h + n].clone(),
                        layer.values[row : row + 1, :, h : h + n].clone(),
                    )
                    for layer, h in zip(cache.layers, held, strict=True)
                ]
            )
        return slices

    def _score(self, logits: torch.Tensor, needs: list[tuple[int, int, int]], column: dict[int, int]) -> None:
        """Add each scored position's log-probability to its request; clear is_greedy on a miss."""
        cols = torch.tensor([column[pos] for pos, _, _ in needs], device=logits.device)
        tokens = torch.tensor([t for _, t, _ in needs], device=logits.device)
        owners = torch.tensor([j for _, _, j in needs])
        logprobs = F.log_softmax(logits[cols], dim=-1, dtype=self.softmax_dtype)
        picked = logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1).double().cpu()
        hits = (logprobs.argmax(dim=-1) == tokens).cpu()
        self._logprob.index_add_(0, owners, picked)
        self._greedy[owners[~hits]] = False
