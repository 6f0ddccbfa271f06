"""An lm-eval model that never recomputes a shared prefix: same requests, same log-likelihoods as `HFLM`.

Stock `HFLM` runs every (context + continuation) in full: a 10-shot HellaSwag doc costs its ~900-token
context four times, once per ending, and a few-shot preamble shared by every doc is recomputed for each.
`PrefixSharingLM` keeps HFLM's front end (tokenisation, left truncation at `max_length`, rolling windows,
`generate_until`) and replaces only the scoring core, `_loglikelihood_tokens`:

1. each request becomes the exact token window HFLM would feed, `(context + continuation)[-(L+1):][:-1]`,
   whose last `len(continuation)` positions are scored;
2. the distinct windows go into a radix tree (sorted, adjacent longest common prefixes): a node is a run of
   tokens shared by every window below it;
3. the tree is walked depth first; the children of a node are computed in batches of up to `batch_size`
   rows on top of the node's KV cache (repeated per row, never recomputed), right-padded as HFLM pads
   them, and an inner node keeps only its new KV slice: memory holds the chains of the nodes waiting in
   the pool (below), never the whole tree's cache;
4. segments are pooled across nodes, so the answer choices of many docs share one forward: each row's own
   prefix cache is left-padded to the longest in the batch and masked out, as batched generation pads
   it. A forward of a few positions costs about as much as one of a few hundred (reading the weights
   dominates), so one forward per doc would cost more than its tokens. Batches group rows of similar
   length, so padding stays a small share of the positions run.

Caches are built from `DynamicCache(config=model.config)`, as the model's own forward builds them: a
pruned model (`whatmatters.method.surgery.apply_plan`) gets one layer per kept attention, and sliding-window
layers (Gemma2/3) keep their last `sliding_window - 1` tokens (they are not pooled: a left-padded sliding
window would hold the wrong tokens). `tokens_computed` counts the positions run through the model
(`tokens_padded` the padding, `forwards` the calls), so tests and `benchmarks/bench_eval.py` can check that
a shared prefix is computed once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from whatmatters.eval.prefix_tree import KV, Node, State, radix_tree, register, tree_tokens

log = logging.getLogger(__name__)
Request = tuple[tuple[str, str] | None, list[int], list[int]]
CPU_AUTO_BATCH = 16  # rows per forward for batch_size="auto" off CUDA, where HFLM's probing takes minutes
# Below this many positions a forward costs about the same as one of this many (the weights' read dominates:
# SmolLM2-135M on 2 CPU cores, ~0.1 s per forward, ~500 positions/s), so padding there costs nothing.
CHEAP_POSITIONS = 256
PAD_SHARE = 1.25  # above CHEAP_POSITIONS, a batch may run at most this many times its real positions
# Left padding of the prefixes costs cache memory and a little attention, not the per-position MLP work, so it
# is only bounded once the padded cache is large (per row and layer: SmolLM2-135M ~46 KB per position).
CHEAP_PAST = 16 * CHEAP_POSITIONS
POOL_BATCHES = 4  # pooled segments run once this many full batches wait: room to group similar lengths


@dataclass(eq=False)
class _Row:
    """One segment to compute: `node`'s tokens on top of the prefix `state`, whose cache is `base`."""

    node: Node
    state: State
    base: KV | None

    @property
    def past(self) -> int:
        return self.state.length


def _wasteful(lengths: list[int], cheap: int = CHEAP_POSITIONS) -> bool:
    """Whether padding `lengths` to their longest would cost noticeably more than their own positions."""
    padded = len(lengths) * max(lengths)
    return padded > cheap and padded > PAD_SHARE * sum(lengths)


class PrefixSharingLM(HFLM):
    """`HFLM` over an in-memory model whose log-likelihoods compute every shared prefix once.

    Construct it as HFLM: `PrefixSharingLM(pretrained=model, tokenizer=tok, batch_size=16)`. `batch_size`
    is the most rows per forward; "auto" probes on CUDA as HFLM does and uses 16 rows elsewhere. The
    log-softmax runs in float32 unless `softmax_dtype` says otherwise (HFLM: the logits' dtype), so a
    bfloat16 model's choices are not decided by bfloat16 rounding over the vocabulary.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("softmax_dtype", torch.float32)
        super().__init__(*args, **kwargs)
        self.tokens_computed = 0  # real token positions run through the model
        self.tokens_padded = 0  # right padding in those batches
        self.forwards = 0
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
            register(ends[index[window]], len(window), cont, j)
        self._seqs = distinct
        self._logprob = torch.zeros(len(requests), dtype=torch.float64)
        self._greedy = torch.ones(len(requests), dtype=torch.bool)
        self._rows = override_bs or self._batch_rows()
        self._layers = DynamicCache(config=self.model.config).layers
        # A left-padded sliding window would keep padding in place of real tokens: pool full caches only.
        self._pool: list[_Row] | None = (
            [] if all(type(layer) is DynamicLayer for layer in self._layers) else None
        )
        self._pbar = tqdm(
            total=tree_tokens(root),
            disable=disable_tqdm or self.rank != 0,
            desc="Prefix-shared tokens",
            unit="tok",
        )
        try:
            with torch.no_grad():
                self._expand(root, State(0, []))
                self._flush(0)
            res = [(float(lp), bool(g)) for lp, g in zip(self._logprob, self._greedy, strict=True)]
        finally:
            self._pbar.close()
            del self._seqs, self._logprob, self._greedy, self._pbar, self._pool  # the tree's memory goes too
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

    def _expand(self, node: Node, state: State) -> None:
        """Compute every child of `node` on top of `state` (the cache of `node`'s prefix), then recurse."""
        base = state.materialize(self._layers) if state.length else None
        rows = [_Row(child, state, base) for child in node.children]
        if self._pool is None:  # depth first, one node's children per batch
            self._compute(rows)
        else:
            self._pool += rows
            self._flush(POOL_BATCHES * self._rows)

    def _flush(self, keep: int) -> None:
        """Compute the pooled rows once more than `keep` wait (until none is left for keep=0)."""
        while self._pool is not None and len(self._pool) > keep:
            rows, self._pool = self._pool, []
            self._compute(rows)

    def _compute(self, rows: list[_Row]) -> None:
        """Run `rows` in batches; each inner node's children follow on top of its new cache slice."""
        for batch in self._batches(rows):
            slices = self._forward(batch)
            for row, kv in zip(batch, slices, strict=True):
                if row.node.children:
                    self._expand(row.node, State(row.node.end, kv, row.state))

    def _batches(self, rows: list[_Row]) -> list[list[_Row]]:
        """`rows` in batches of at most `batch_size` rows of similar prefix and segment lengths."""
        batches: list[list[_Row]] = []
        for row in sorted(rows, key=lambda r: (r.node.width, r.past), reverse=True):
            trial = batches[-1] + [row] if batches else []
            if (
                not trial
                or len(trial) > self._rows
                or _wasteful([r.node.width for r in trial])
                or _wasteful([r.past for r in trial], CHEAP_PAST)
            ):
                batches.append([row])
            else:
                batches[-1] = trial
        return batches

    def _forward(self, batch: list[_Row]) -> list[KV]:
        """One forward of `batch`'s segments over their prefixes; the new KV slice of each inner node."""
        lengths = [row.node.width for row in batch]
        width = max(lengths)
        # Right padding, as HFLM pads: causal attention keeps it out of every real position.
        ids = torch.tensor(
            [
                list(self._seqs[r.node.rep][r.node.start : r.node.end]) + [0] * (width - r.node.width)
                for r in batch
            ],
            dtype=torch.long,
            device=self.device,
        )
        self.forwards += 1
        self.tokens_computed += sum(lengths)
        self._pbar.update(sum(lengths))
        self.tokens_padded += len(batch) * width - sum(lengths)

        past = max(row.past for row in batch)
        shared = all(row.base is batch[0].base for row in batch)  # one prefix: a view per row, no copy
        cache = DynamicCache(config=self.model.config)
        keep_kv = any(row.node.children for row in batch)
        for i, layer in enumerate(cache.layers):
            if past:
                keys, values = self._past(batch, i, shared)
                layer.lazy_initialization(keys, values)
                layer.keys, layer.values = keys, values
                if isinstance(layer, DynamicSlidingWindowLayer):
                    layer.cumulative_length = past
            if keep_kv and isinstance(layer, DynamicSlidingWindowLayer):
                layer.activate_past_recording()  # keep the padded batch's full states to slice rows from
        held = [layer.keys.shape[-2] if past else 0 for layer in cache.layers]  # new slices start there
        offsets = torch.tensor([row.past for row in batch], device=self.device).unsqueeze(1)
        position_ids = offsets + torch.arange(width, device=self.device)
        mask = None
        if not shared:  # left-padded prefixes: mask each row's padding, as batched generation does
            mask = torch.arange(past + width, device=self.device) >= (past - offsets)
            mask = mask.long()

        positions = sorted({pos for row in batch for pos, _, _ in row.node.needs})
        with torch.autocast(
            device_type=self.device.type,
            dtype=self.mixed_precision_dtype,
            enabled=self.mixed_precision_dtype is not None,
        ):
            logits = self.model(
                input_ids=ids,
                attention_mask=mask,
                past_key_values=cache,
                use_cache=True,
                position_ids=position_ids,
                logits_to_keep=torch.tensor(positions or [0], dtype=torch.long, device=self.device),
            ).logits  # (B, len(positions), V): only the scored positions reach the vocabulary projection
        column = {pos: k for k, pos in enumerate(positions)}
        for i, row in enumerate(batch):
            if row.node.needs:
                self._score(logits[i], row.node.needs, column)

        return [
            [
                (layer.keys[i : i + 1, :, h : h + n].clone(), layer.values[i : i + 1, :, h : h + n].clone())
                for layer, h in zip(cache.layers, held, strict=True)
            ]
            if row.node.children
            else []
            for i, (row, n) in enumerate(zip(batch, lengths, strict=True))
        ]

    @staticmethod
    def _past(batch: list[_Row], layer: int, shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Cache layer `layer`'s keys and values: each row's prefix, left-padded to the batch's longest."""
        if shared:
            keys, values = batch[0].base[layer]
            return keys.expand(len(batch), -1, -1, -1), values.expand(len(batch), -1, -1, -1)
        past = max(row.past for row in batch)
        first = next(row.base for row in batch if row.base is not None)[layer][0]
        heads, dim = first.shape[1], first.shape[-1]
        keys = first.new_zeros(len(batch), heads, past, dim)
        values = first.new_zeros(len(batch), heads, past, dim)
        for i, row in enumerate(batch):
            if row.base is not None:
                keys[i, :, past - row.past :] = row.base[layer][0][0]
                values[i, :, past - row.past :] = row.base[layer][1][0]
        return keys, values

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
