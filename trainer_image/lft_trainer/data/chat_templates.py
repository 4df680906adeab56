"""The tiny model's chat template (no imports: the CPU image's model-building stage copies it)."""

# The Phi-3 chat template, byte for byte as in microsoft/Phi-3-mini-4k-instruct (and TRL's
# chat_templates/phi3.jinja, so TRL recognises it and has a training variant for assistant-only
# loss). tiny_model.py ships it with the tiny model's tokenizer. A tokenizer without a template
# gets none: model.chatTemplate names one (rendering.py), e.g. "phi3".
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}"
    "{% endif %}"
)
