"""The dataset, from the user's files to the token ids the model trains on (no model needed, except a tokenizer).

  sources.py         finding and reading the files (JSON Lines, JSON, Parquet; local, any fsspec URI or the Hub)
  formats.py         row formats: the column mapping (ColumnMapping), format detection, row checks, the normal row
  rendering.py       the chat template and the rows rendered to token ids and labels
  chat_templates.py  the tiny model's chat template (no imports: the CPU image's model stage copies it alone)
  trainset.py        the train and eval datasets as TRL gets them, tokenized once per rank
  mixture.py         dataset.mixture: the sources' errors named, the training set drawn from them by weight
  shards.py          which rows each rank trained on (distinct shards in a multi-process run)
"""
