"""The deliverable: the adapter as a user and a serving engine get it.

  adapter_card.py  adapter_config.json naming the base model as the user gave it, the README card, how to load it
  servability.py   can vLLM serve it as it is (a pure check of adapter_config.json)
  samples.py       evaluation.samples: held-out prompts completed by the base and the tuned model
"""
