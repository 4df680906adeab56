"""What the run tells, and to whom: stdout and the resource's status while it runs, files next to the adapter
at checkpoints and at the end, experiment trackers.

  progress.py   the Reporter: progress, metrics, checkpoints; JSON lines on stdout and rate-limited status patches
  history.py    metrics.jsonl rows from the trainer's log history (pure)
  loss_plot.py  loss.png from those rows (matplotlib, Agg)
  artifacts.py  HistoryWriter: metrics.jsonl and loss.png refreshed in the background, uploaded to the output
  summary.py    training_summary.json, from plain facts (pure)
  tracking.py   training.reportTo: TensorBoard, MLflow, Weights & Biases through transformers' integrations
"""
