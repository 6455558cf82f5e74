"""Batched generation for soft-prompt methods (Prompt Tuning, P-Tuning) at the positions they trained at.

PEFT puts the virtual tokens in front of a left-padded batch ([prompt][pads][text]) and drops position
ids, so with rotary positions a padded record's text sits further from the prompt than in (right-padded)
training, and its answer depends on which records share its batch. Here the pads go first
([pads][prompt][text]): the base model numbers positions from the attention mask, so the prompt is at
0…V-1 and the text follows it, exactly as in training and in PEFT's own unpadded generation.

An encoder–decoder (T5) gets the soft prompt in its encoder, whose relative positions depend only on distances:
with the pads first, the prompt sits next to the text as in (right-padded) training, whatever the batch.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.taskdata import family


def generate(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """The generated token ids only (batch × new tokens) of a left-padded batch, pads before the soft prompt."""
    embeds = model.get_input_embeddings()(input_ids)
    virtual = model.active_peft_config.num_virtual_tokens   # an encoder–decoder's prompt holds the decoder's too,
    prompt = model.get_prompt(batch_size=input_ids.shape[0])[:, :virtual].to(embeds.dtype)   # which PEFT leaves unused
    rows, masks = [], []
    for row in range(input_ids.shape[0]):
        pads = int((attention_mask[row] == 0).sum())
        rows.append(torch.cat([embeds[row, :pads], prompt[row], embeds[row, pads:]]))
        masks.append(torch.cat([attention_mask[row, :pads], attention_mask.new_ones(virtual),
                                attention_mask[row, pads:]]))
    out = model.get_base_model().generate(inputs_embeds=torch.stack(rows), attention_mask=torch.stack(masks),
                                          **kwargs)
    return family.of_model(model).new_ids(out, 0)   # given embeddings, a decoder-only model repeats no prompt ids
