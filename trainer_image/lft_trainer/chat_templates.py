"""Chat templates the trainer supplies itself (no imports: the CPU image's model-building stage copies it)."""

# The Phi-3 chat template, byte for byte as in microsoft/Phi-3-mini-4k-instruct (and TRL's
# chat_templates/phi3.jinja, so TRL recognises it and swaps in its training variant for
# assistant-only loss). model.py applies it to tokenizers that ship no template.
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}"
    "{% endif %}"
)
