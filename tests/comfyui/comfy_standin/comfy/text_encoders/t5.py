"""ComfyUI's T5 encoder: `shared` embedding with `out_dtype`, then the encoder stack (here transformers' own
T5 stack, tiny), returning the last layer after the final norm and an intermediate layer."""

import torch
from transformers import T5Config, T5EncoderModel

from comfy import ops


class T5(torch.nn.Module):
    def __init__(self, config, dtype, device, operations):
        super().__init__()
        self.num_layers = config["num_layers"]
        hf_config = T5Config(
            vocab_size=config["vocab_size"],
            d_model=config["d_model"],
            d_kv=config["d_kv"],
            d_ff=config["d_ff"],
            num_layers=config["num_layers"],
            num_heads=config["num_heads"],
            feed_forward_proj="gated-gelu",
        )
        self.stack = T5EncoderModel(hf_config).eval()
        self.shared = ops.manual_cast.Embedding(config["vocab_size"], config["d_model"])
        self.dtype = dtype

    def get_input_embeddings(self):
        return self.shared

    def forward(self, input_ids, attention_mask, embeds=None, num_tokens=None, **kwargs):
        x = embeds if input_ids is None else self.shared(input_ids, out_dtype=kwargs.get("dtype", torch.float32))
        out = self.stack(inputs_embeds=x, attention_mask=attention_mask, output_hidden_states=True)
        wanted = kwargs.get("intermediate_output")
        intermediate = None
        if wanted is not None:
            intermediate = out.hidden_states[1:][wanted]
            if kwargs.get("final_layer_norm_intermediate", True):
                intermediate = self.stack.encoder.final_layer_norm(intermediate)
        return out.last_hidden_state, intermediate
