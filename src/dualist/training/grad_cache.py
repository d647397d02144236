"""Gradient caching (GradCache, Gao et al., 2021): in-batch-negative batches larger than memory allows.

With in-batch negatives every query is scored against every document of the batch, so a batch
cannot be cut into independent micro-batches the way gradient accumulation cuts it: the negatives
would shrink with it. Gradient caching cuts the *encoder* work instead, in three passes over chunks
of ``chunk_size`` texts:

1. embed every chunk without keeping its activations (no graph);
2. compute the loss from the embeddings alone, and its gradient with respect to each embedding
   (``B x d`` numbers, cheap);
3. embed each chunk again, now with its graph, and backpropagate that chunk's cached embedding
   gradients through it; the parameters' gradients add up chunk by chunk.

The loss and the parameter gradients are those of the one-pass :func:`~dualist.training.student_step`
up to float rounding, while only one chunk's activations are alive at a time; the price is a second
forward pass. Pass 3 replays pass 1's dropout masks (the RNG state is saved before each chunk and
restored for its second pass). Under torchrun, pass 2 gathers every process's document embeddings
(:func:`dualist.distributed.gather_rows`) and the training loop synchronises the accumulated
gradients once per optimizer step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from dualist.distributed import process_rows
from dualist.training.examples import Batch
from dualist.training.student import embedding_loss, student_step

__all__ = ["GradCacheStep"]


class GradCacheStep:
    """A student step function that backpropagates itself in chunks (see the module docstring).

    ``step(model, batch)`` is the plain one-pass :func:`~dualist.training.student_step` (the loss,
    with its graph); :func:`~dualist.training.train_loop` calls :meth:`forward_backward` instead.
    """

    def __init__(self, loss_fn: Callable[..., torch.Tensor], *, chunk_size: int, in_batch_negatives: bool = False):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.loss_fn, self.chunk_size, self.in_batch_negatives = loss_fn, chunk_size, in_batch_negatives

    def __call__(self, model: Any, batch: Batch) -> torch.Tensor:
        return student_step(model, batch, self.loss_fn, in_batch_negatives=self.in_batch_negatives)

    def forward_backward(self, model: Any, batch: Batch, backward: Callable[[torch.Tensor], None],
                         precision: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
                         ) -> torch.Tensor:
        """Loss of this process's rows (detached) after accumulating its gradients into the parameters.

        ``backward(loss)`` backpropagates the loss (the loop scales it for accumulation and fp16);
        ``precision()`` is the autocast context the forward passes run under.
        """
        rows = process_rows(len(batch))
        local = batch.select(rows)
        texts, index = local.unique_docs()
        n = self.chunk_size
        chunks = [(model.embed_queries, local.queries[i:i + n]) for i in range(0, len(local.queries), n)]
        chunks += [(model.embed_docs, texts[i:i + n]) for i in range(0, len(texts), n)]
        device = model.device if hasattr(model, "device") else None

        states, leaves = [], []
        with torch.no_grad():  # pass 1: embeddings only
            for embed, part in chunks:
                states.append(_rng_state(device))
                with precision():
                    leaves.append(embed(part).detach().requires_grad_())
        after = _rng_state(device)

        n_queries = -(-len(local.queries) // n)
        q, docs = _rows(leaves[:n_queries], model), _rows(leaves[n_queries:], model)
        with precision():  # pass 2: the loss from the embeddings, and its gradient w.r.t. them
            loss = embedding_loss(model, q, docs, index, batch, rows, self.loss_fn, self.in_batch_negatives)
        backward(loss)

        for (embed, part), state, leaf in zip(chunks, states, leaves):  # pass 3: chunk by chunk, with graph
            _set_rng_state(state, device)
            with precision():
                again = embed(part)
            if leaf.grad is not None:
                torch.autograd.backward(again, leaf.grad)
        _set_rng_state(after, device)
        return loss.detach()


def _rows(parts: list[torch.Tensor], model: Any) -> torch.Tensor:
    if parts:
        return torch.cat(parts)
    return torch.zeros((0, model.dim), device=model.device, requires_grad=True)


def _rng_state(device: torch.device | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device is not None and device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device | None) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
