"""The model: from the spec to a loaded base model with LoRA, and back out as a merged model.

  loading.py     the base model, the tokenizer, dtype and quantization, the LoRA adapter, the merge and its upload
  extra_settings.py  training.extra -> SFTConfig/LoraConfig keyword arguments, typed from the fields they name
  tiny_model.py  the tiny random Phi-3 of the CPU image and the tests (`python -m lft_trainer.model.tiny_model`;
                 the image's model stage copies it with this __init__ and data/chat_templates.py only)
"""
