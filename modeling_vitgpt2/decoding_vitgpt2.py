"""Greedy captioning without per-token overhead: GPT-2's own blocks over preallocated keys and values, and on a GPU
the decoding steps recorded once as CUDA graphs and replayed. Prompts of different lengths in one batch arrive
left-padded: an attention mask hides the padding and position ids skip it, as in transformers' own loop.

A caption is ~20 tokens from a one-token prefix, so `generate()`'s per-token work (logits processors, stopping
criteria, cache bookkeeping, hundreds of kernel launches) costs more than the arithmetic. Greedy decoding of a fixed
batch for a fixed token budget has static shapes, which is what CUDA graphs need. The tokens are `generate()`'s:
the same modules and the same EOS, padding, `min_new_tokens` and trimming rules (tests compare the two).
"""

import inspect
import threading
import weakref
from collections import OrderedDict

import torch
from torch.func import functional_call
from transformers import GenerationConfig, GPT2LMHeadModel
from transformers.models.gpt2.modeling_gpt2 import GPT2Block
from transformers.pytorch_utils import Conv1D

from .packing_vitgpt2 import causal_attention

# Generation settings that leave greedy tokens alone. Anything else set (beams, sampling, repetition penalties, scores,
# stop strings, ...) or any extra generate() argument sends the call to transformers' own loop.
_GREEDY_SAFE_SETTINGS = {
    "max_new_tokens", "min_new_tokens", "max_length", "eos_token_id", "pad_token_id", "bos_token_id",
    "decoder_start_token_id", "use_cache", "cache_implementation", "transformers_version", "_from_model_config",
    "temperature", "top_k", "top_p",  # sampling knobs that greedy decoding ignores
}  # fmt: skip
# generate()'s cache_implementation values this decoder stands in for; "dynamic" (or any other) asks for transformers'.
_OUR_CACHE_IMPLEMENTATIONS = (None, "static")
CUDA_GRAPH_CHUNK = 4  # decoding steps per graph: the batch stops within this many steps of its last EOS
_DECODERS_PER_MODEL = 4  # each holds keys/values and graph memory for one batch shape
_decoders: "weakref.WeakKeyDictionary[torch.nn.Module, OrderedDict]" = weakref.WeakKeyDictionary()
_decoders_lock = threading.Lock()
# transformers 5.24 renamed the blocks' `past_key_values` argument to `cache` (the old name warns until 5.40).
_CACHE_ARGUMENT = "cache" if "cache" in inspect.signature(GPT2Block.forward).parameters else "past_key_values"
# ... and GPT2LMHeadModel's argument and output field likewise.
_LM_CACHE = "cache" if "cache" in inspect.signature(GPT2LMHeadModel.forward).parameters else "past_key_values"
_DEFAULT_SETTINGS = GenerationConfig().to_dict()  # what "changed" is measured against, once rather than per call
# transformers 5 leaves most settings None and fills in these values inside generate(). A config that spells them out
# asks for nothing more: Seq2SeqTrainer's evaluation writes them into the model's generation_config after its first
# batch, which had sent every later evaluation batch to transformers' loop.
_IMPLIED_SETTINGS = getattr(GenerationConfig, "_get_default_generation_params", dict)()


def positions_from_mask(attention_mask: torch.Tensor) -> torch.LongTensor:
    """Position ids that skip padding (0 on padded positions), as transformers' generate() derives them: a padded
    prompt then sits at the same positions as the same prompt alone."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def can_decode_fast(language_model, generation_config: GenerationConfig, model_kwargs: dict, context_length: int):
    """Whether this call is plain greedy decoding that `greedy_decode` reproduces exactly."""
    changed = {
        key
        for key, value in generation_config.to_dict().items()
        if value != _DEFAULT_SETTINGS.get(key)
        and not (value in (None, False) and _DEFAULT_SETTINGS.get(key) in (None, False))
        and not (key in _IMPLIED_SETTINGS and value == _IMPLIED_SETTINGS[key])
    }
    return (
        type(language_model) is GPT2LMHeadModel
        and language_model.config._attn_implementation == "sdpa"
        and not language_model.training
        and not model_kwargs
        and generation_config.use_cache is not False  # use_cache=False asks for transformers' uncached loop
        and generation_config.cache_implementation in _OUR_CACHE_IMPLEMENTATIONS
        and generation_config.max_new_tokens is not None
        and context_length + generation_config.max_new_tokens <= language_model.config.n_positions
        and changed <= _GREEDY_SAFE_SETTINGS  # so no beams, sampling or extra sequences either
    )


def greedy_decode(
    language_model: GPT2LMHeadModel,
    context: torch.Tensor,
    mask: torch.Tensor,
    generation_config: GenerationConfig,
    isolated_tokens: int = 0,
):
    """New token ids (batch, new tokens) after the `context` embeddings (image prefix and prompt) whose padding
    `mask` marks with 0, as greedy `generate()` returns them; the first `isolated_tokens` real tokens of the context
    attend to themselves only (isolated image tokens)."""
    eos = generation_config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    pad = generation_config.pad_token_id
    pad = pad if pad is not None else eos[0] if eos else 0
    device_type = context.device.type
    autocast = torch.is_autocast_enabled(device_type)
    compute_dtype = torch.get_autocast_dtype(device_type) if autocast else language_model.dtype
    key = (
        tuple(context.shape), context.dtype, context.device, compute_dtype, autocast, tuple(eos), pad,
        not bool(mask.all()),  # padded prompts need a mask at every step; the rest keep the causal kernel
        isolated_tokens,
        torch.is_inference_mode_enabled(),  # buffers made in inference mode cannot be written outside it
        generation_config.max_new_tokens, generation_config.min_new_tokens or 0,
        # The graphs read weights at fixed addresses: moving or re-casting the model must make new ones.
        tuple(parameter.data_ptr() for parameter in language_model.parameters()),
    )  # fmt: skip
    with _decoders_lock:
        decoders = _decoders.setdefault(language_model, OrderedDict())
        if key not in decoders:
            decoders[key] = GreedyDecoder(
                language_model, context, not bool(mask.all()), compute_dtype, autocast,
                generation_config.max_new_tokens, generation_config.min_new_tokens or 0, eos, pad, isolated_tokens,
            )  # fmt: skip
            while len(decoders) > _DECODERS_PER_MODEL:
                decoders.popitem(last=False)
        decoders.move_to_end(key)
        decoder = decoders[key]
    return decoder(context, mask)


class _StaticKeysValues:
    """What GPT-2's attention asks of a cache: `update` stores this step's keys/values and returns all so far."""

    def __init__(self, config, batch: int, length: int, dtype, device):
        shape = (batch, config.n_head, length, config.n_embd // config.n_head)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        self.position = 0  # where this step's tokens go; a Python int, so each recorded step has fixed shapes

    def update(self, keys, values, layer_idx, *args, **kwargs):
        end = self.position + keys.shape[2]
        self.keys[layer_idx][:, :, self.position : end].copy_(keys)
        self.values[layer_idx][:, :, self.position : end].copy_(values)
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]


class GreedyDecoder:
    """Greedy decoding for one batch shape and token budget; buffers are allocated once and reused by every call."""

    def __init__(
        self, language_model, context, padded, compute_dtype, autocast, max_new_tokens, min_new_tokens, eos, pad,
        isolated_tokens=0,
    ):  # fmt: skip
        batch, self.context_length, _ = context.shape
        device = context.device
        self.language_model = language_model
        self.max_new_tokens, self.min_new_tokens = max_new_tokens, min_new_tokens
        self.autocast = (device.type, compute_dtype, autocast)
        self.cache = _StaticKeysValues(
            language_model.config, batch, self.context_length + max_new_tokens, compute_dtype, device
        )
        self.context = torch.zeros_like(context)
        # With padding: which keys are real (context, then every new token) and each row's next position.
        self.padded = padded
        self.isolated_tokens = isolated_tokens
        self.real_keys = torch.ones(batch, self.context_length + max_new_tokens, dtype=torch.bool, device=device)
        self.context_positions = torch.zeros(batch, self.context_length, dtype=torch.long, device=device)
        self.context_lengths = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.tokens = torch.full((batch, max_new_tokens), pad, dtype=torch.long, device=device)
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
        self.eos = torch.tensor(eos, dtype=torch.long, device=device)
        self.pad = torch.tensor(pad, dtype=torch.long, device=device)
        self.block_weights, self.lm_head_weight = self._matmul_weight_copies(compute_dtype if autocast else None)
        self.graphs = self._record_graphs() if device.type == "cuda" else None
        self.lock = threading.Lock()  # the buffers are shared: a server's threads take turns

    def __call__(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.context.copy_(context)
            if self.padded:
                self.real_keys[:, : self.context_length].copy_(mask.bool())
                self.context_positions.copy_(positions_from_mask(mask))
                self.context_lengths.copy_(mask.long().sum(-1, keepdim=True))
            if self.graphs is None:
                for index in range(self.max_new_tokens):
                    self._step(index)
                    if self.finished.all():
                        break
            else:
                for graph in self.graphs:
                    graph.replay()
                    if self.finished.all():
                        break
            return self.tokens[:, : self._generated_length()].clone()

    def _generated_length(self) -> int:
        """Steps until every caption had its EOS (or the budget), like generate(): later columns are stale."""
        if len(self.eos) == 0:
            return self.max_new_tokens
        is_eos = (self.tokens[:, :, None] == self.eos).any(dim=2)
        last = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), self.max_new_tokens - 1)
        return int(last.max()) + 1

    def _matmul_weight_copies(self, autocast_dtype):
        """Autocast casts every matmul weight at every step (~150 casts per token for GPT-2 small); copies in its
        dtype, refreshed once per call, give the same numbers. Layer norms and embeddings keep their weights."""
        language_model = self.language_model
        if autocast_dtype is None or language_model.dtype == autocast_dtype:
            return [{} for _ in language_model.transformer.h], None
        block_weights = []
        for block in language_model.transformer.h:
            block_weights.append({
                f"{name}.{kind}": torch.empty_like(getattr(module, kind), dtype=autocast_dtype)
                for name, module in block.named_modules() if isinstance(module, Conv1D)
                for kind in ("weight", "bias")
            })  # fmt: skip
        return block_weights, torch.empty_like(language_model.lm_head.weight, dtype=autocast_dtype)

    def _refresh_weight_copies(self) -> None:
        if self.lm_head_weight is None:
            return
        for block, weights in zip(self.language_model.transformer.h, self.block_weights):
            for name, copy in weights.items():
                copy.copy_(block.get_parameter(name))
        self.lm_head_weight.copy_(self.language_model.lm_head.weight)

    def _step(self, index: int) -> None:
        transformer = self.language_model.transformer
        if index == 0:
            self._refresh_weight_copies()  # inside the first graph: weights trained since the last call count
            self.finished.zero_()
            hidden, start = self.context, 0
        else:
            hidden, start = transformer.wte(self.tokens[:, index - 1 : index]), self.context_length + index - 1
        attention_mask = None  # unpadded: the causal kernel, exactly as transformers runs it
        if index == 0 and (self.padded or self.isolated_tokens):
            attention_mask = causal_attention(self.real_keys[:, : self.context_length], None, self.isolated_tokens)
        if not self.padded:
            hidden = hidden + transformer.wpe.weight[start : start + hidden.shape[1]]
        elif index == 0:
            hidden = hidden + transformer.wpe(self.context_positions)
        else:
            hidden = hidden + transformer.wpe(self.context_lengths + index - 1)
            attention_mask = self.real_keys[:, None, None, : start + 1]
        self.cache.position = start
        for block, weights in zip(transformer.h, self.block_weights):
            arguments, keywords = (hidden,), {_CACHE_ARGUMENT: self.cache, "attention_mask": attention_mask}
            hidden = functional_call(block, weights, arguments, keywords) if weights else block(*arguments, **keywords)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden  # transformers 4 blocks return a tuple
        hidden = transformer.ln_f(hidden[:, -1])
        if self.lm_head_weight is None:
            logits = self.language_model.lm_head(hidden).float()
        else:
            logits = torch.nn.functional.linear(hidden, self.lm_head_weight).float()
        if index < self.min_new_tokens and len(self.eos):
            logits.index_fill_(1, self.eos, float("-inf"))
        next_tokens = torch.where(self.finished, self.pad, logits.argmax(dim=-1))
        self.tokens[:, index] = next_tokens
        self.finished |= (next_tokens[:, None] == self.eos).any(dim=1)

    def _record_graphs(self) -> list:
        device_type, dtype, enabled = self.autocast
        # Autocast's weight-cast cache would outlive a recording; casting inside the graph keeps each replay current.
        with torch.autocast(device_type, dtype=dtype, enabled=enabled, cache_enabled=False):
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # one eager pass first: library handles and workspaces come from here
                for index in range(self.max_new_tokens):
                    self._step(index)
            torch.cuda.current_stream().wait_stream(stream)
            graphs, pool = [], torch.cuda.graph_pool_handle()
            for start in range(0, self.max_new_tokens, CUDA_GRAPH_CHUNK):
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):  # replayed in recording order, so they share memory
                    for index in range(start, min(start + CUDA_GRAPH_CHUNK, self.max_new_tokens)):
                        self._step(index)
                graphs.append(graph)
        return graphs


def ctc_greedy(ctc_log_probs: torch.Tensor, column_mask: torch.Tensor | None, blank: int) -> list[list[int]]:
    """The CTC head's own reading: the best label per column, repeats merged, blanks dropped."""
    best = ctc_log_probs.argmax(-1)
    if column_mask is not None:
        best = best.masked_fill(~column_mask.bool(), blank)
    readings = []
    for row in best.tolist():
        reading, previous = [], blank
        for label in row:
            if label != blank and label != previous:
                reading.append(label)
            previous = label
        readings.append(reading)
    return readings


class CTCPrefixScorer:
    """Log-probability that the CTC head's columns spell a text starting with (or, for EOS, equal to) each prefix,
    for every possible next token at once (Watanabe et al., 2017, "Hybrid CTC/attention"). Decoding adds it to
    GPT-2's log-probabilities, so the text stays on what the columns show: it cannot skip a word, repeat one, run
    past the line's end, or write anything where the columns show only blanks.

    `ctc_log_probs` (batch, columns, vocabulary); columns where `column_mask` is 0 (batch padding) emit only blank.
    """

    def __init__(self, ctc_log_probs: torch.Tensor, column_mask: torch.Tensor | None, blank: int):
        log_probs = ctc_log_probs.float()
        if column_mask is not None:
            padding = ~column_mask.bool().to(log_probs.device)
            log_probs = log_probs.masked_fill(padding[..., None], float("-inf"))
            log_probs[..., blank] = log_probs[..., blank].masked_fill(padding, 0.0)
        self.log_probs = log_probs.transpose(0, 1)  # (columns, batch, vocabulary)
        # The same as probabilities from the second column on, (batch, columns - 1, vocabulary): each step's prefix
        # scores are then one batched product with the prefix's own probabilities (float64: no underflow).
        self.later_probs = log_probs[:, 1:].double().exp()
        self.blank = blank
        columns, batch, _ = self.log_probs.shape
        # Forward variables of the prefix so far, ending in a label (n) or in blank (b): (columns, batch).
        self.ending_label = torch.full((columns, batch), float("-inf"), device=log_probs.device)
        self.ending_blank = self.log_probs[:, :, blank].cumsum(0)
        self.prefix_score = torch.zeros(batch, device=log_probs.device)
        self.last = torch.full((batch,), -1, dtype=torch.long, device=log_probs.device)
        self._prefix = None

    def scores(self) -> torch.Tensor:
        """(batch, vocabulary): log P(prefix + token ...) - log P(prefix ...); for the blank (EOS) position, the
        score of ending here. The probability that the columns spell prefix + c needs no recursion over the columns:
        c is first emitted at some column t, after the prefix was spelt by column t - 1 (Watanabe et al.'s psi).
        Only the token then chosen needs its forward variables, computed in `advance`."""
        log_probs, blank = self.log_probs, self.blank
        total = torch.logaddexp(self.ending_label, self.ending_blank)  # (columns, batch): prefix spelt by column t
        prefix = self._first_emitted_later(total, self.later_probs)  # (batch, vocabulary): c first at a t >= 1
        written = self.last >= 0
        if bool(written.any()):
            # A repeat of the last label needs a blank between the two: only the blank-ending mass may precede it.
            last = self.last.clamp(min=0)
            last_probs = self.later_probs.gather(2, last[:, None, None].expand(-1, self.later_probs.shape[1], 1))
            repeat = self._first_emitted_later(self.ending_blank, last_probs)[:, 0]
            prefix[written, last[written]] = repeat[written]
        if not bool(written.all()):
            # A label in the first column starts the text only if nothing has been written yet.
            prefix = torch.logaddexp(prefix, log_probs[0].masked_fill(written[:, None], float("-inf")))
        prefix[:, blank] = total[-1]  # ending here: every column spent on the prefix so far
        self._prefix = prefix
        return prefix - self.prefix_score[:, None]

    @staticmethod
    def _first_emitted_later(spelt: torch.Tensor, later_probs: torch.Tensor) -> torch.Tensor:
        """(batch, labels): log of sum over columns t >= 1 of P(prefix spelt by t - 1) x P(label at t), from the
        log-probabilities `spelt` (columns, batch) and `later_probs` (batch, columns - 1, labels: every label, or the
        few asked about), as one batched matrix product in float64."""
        if spelt.shape[0] < 2:  # a single column: nothing can follow the prefix
            return torch.full(later_probs.shape[::2], float("-inf"), device=spelt.device)
        spelt = spelt[:-1].double().transpose(0, 1)  # (batch, columns - 1)
        peak = spelt.max(dim=1, keepdim=True).values.clamp(min=-1e30)  # rows spelt nowhere stay -inf below
        weights = (spelt - peak).exp()[:, None, :]
        return (torch.bmm(weights, later_probs)[:, 0].log() + peak).float()

    def advance(self, tokens: torch.Tensor) -> None:
        """Extend each row's prefix by its chosen token (batch,): the forward variables of prefix + token, ending in
        that label or in blank at each column, from the recursions r_t = (r_{t-1} + start_{t-1}) p_t(label) and
        b_t = (b_{t-1} + r_{t-1}) p_t(blank), solved in closed form with cumulative sums in float64."""
        log_probs, columns = self.log_probs, self.log_probs.shape[0]
        label = log_probs.gather(2, tokens[None, :, None].expand(columns, -1, 1))[..., 0].double()  # (columns, batch)
        label = label.clamp(min=-1e4)  # padding columns (-inf): impossible in effect, and no inf - inf below
        blank = log_probs[..., self.blank].double()
        total = torch.logaddexp(self.ending_label, self.ending_blank).double()
        start = torch.where(tokens == self.last, self.ending_blank.double(), total)  # repeats start from blank only
        first = label[0].masked_fill(self.last >= 0, float("-inf"))
        new_label = self._linear_recurrence(first, start, label)
        new_blank = self._linear_recurrence(torch.full_like(first, float("-inf")), new_label, blank)
        self.ending_label, self.ending_blank = new_label.float(), new_blank.float()
        self.prefix_score = self._prefix.gather(1, tokens[:, None])[:, 0]
        self.last = tokens

    @staticmethod
    def _linear_recurrence(initial: torch.Tensor, inflow: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """x_0 = initial, x_t = logaddexp(x_{t-1}, inflow_{t-1}) + factor_t, for all t at once (log space,
        (columns, batch)): x_t = F_t + logcumsumexp(initial, inflow_s - F_s for s < t), F the cumulative factor."""
        cumulative = torch.cat([torch.zeros_like(factor[:1]), factor[1:].cumsum(0)])
        terms = torch.cat([initial[None], inflow[:-1] - cumulative[:-1]])
        return cumulative + torch.logcumsumexp(terms, dim=0)


def repeated_tail(tokens: list[int], min_span: int) -> int:
    """Length of the span the sequence ends with twice in a row (the longest, at least `min_span`), else 0."""
    for span in range(len(tokens) // 2, min_span - 1, -1):
        if tokens[-span:] == tokens[-2 * span : -span]:
            return span
    return 0


@torch.no_grad()
def ctc_guided_decode(
    language_model: GPT2LMHeadModel,
    context: torch.Tensor,
    mask: torch.Tensor,
    scorer: CTCPrefixScorer | None,
    max_new_tokens: int,
    eos: int,
    pad: int,
    ctc_weight: float,
    min_repeat: int = 10,
) -> torch.Tensor:
    """Greedy decoding on (1 - ctc_weight) x GPT-2's log-probabilities + ctc_weight x the CTC prefix score (GPT-2
    alone where `scorer` is None and ctc_weight 0). A text
    that ends with the same span of `min_repeat` or more tokens twice in a row stops there, the second copy
    dropped (a loop is never written out). Returns new token ids (batch, new tokens), padded after EOS."""
    batch, device = context.shape[0], context.device
    output = language_model(
        inputs_embeds=context, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=True,
        logits_to_keep=1,
    )  # fmt: skip
    cache, logits = getattr(output, _LM_CACHE), output.logits[:, -1]
    next_position = mask.long().sum(-1, keepdim=True)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    written = [[] for _ in range(batch)]
    for step in range(max_new_tokens):
        scores = logits.float().log_softmax(-1)
        if ctc_weight:
            scores = (1 - ctc_weight) * scores + ctc_weight * scorer.scores()
        tokens = torch.where(finished, torch.full_like(finished, eos, dtype=torch.long), scores.argmax(-1))
        for row, token in enumerate(tokens.tolist()):
            if finished[row]:
                continue
            if token == eos:
                finished[row] = True
                continue
            written[row].append(token)
            span = repeated_tail(written[row], min_repeat)
            if span:
                del written[row][-span:]
                finished[row] = True
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        if ctc_weight:
            scorer.advance(tokens)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        output = language_model(
            input_ids=tokens[:, None], attention_mask=mask, position_ids=next_position + step, use_cache=True,
            **{_LM_CACHE: cache},
        )  # fmt: skip
        cache, logits = getattr(output, _LM_CACHE), output.logits[:, -1]
    length = max(len(row) for row in written) + 1  # room for EOS, as generate() returns it
    result = torch.full((batch, length), pad, dtype=torch.long, device=device)
    for row, tokens in enumerate(written):
        result[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long, device=device)
        result[row, len(tokens)] = eos
    return result
