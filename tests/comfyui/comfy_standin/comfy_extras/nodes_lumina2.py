"""ComfyUI's `CLIPTextEncodeLumina2`: the chosen system prompt, ` <Prompt Start> `, then the user's prompt,
tokenized and encoded as `CLIPTextEncode` does (the node's V3 wrapper left out: `execute` returns the
conditioning in a tuple)."""


class CLIPTextEncodeLumina2:
    SYSTEM_PROMPT = {
        "superior": "You are an assistant designed to generate superior images with the superior degree of "
        "image-text alignment based on textual prompts or user prompts.",
        "alignment": "You are an assistant designed to generate high-quality images with the highest degree of "
        "image-text alignment based on textual prompts.",
    }

    @classmethod
    def execute(cls, clip, user_prompt, system_prompt):
        if clip is None:
            raise RuntimeError("ERROR: clip input is invalid: None")
        prompt = f"{cls.SYSTEM_PROMPT[system_prompt]} <Prompt Start> {user_prompt}"
        return (clip.encode_from_tokens_scheduled(clip.tokenize(prompt)),)
