"""Object storage and what the run keeps there: inputs, checkpoints, the adapter (also used by the CLI).

  store.py        Storage: one output or input URI through fsspec (upload, download, sha256, access checks)
  filesystems.py  which protocol a URI names, credentials from the environment, one filesystem per protocol
  retry.py        retries with backoff, transient or final storage errors, scrubbed error messages
  checkpoints.py  checkpoint manifests (with the run's identity), retention, discovery, verified download
  uploader.py     background checkpoint uploads: training does not wait for storage
  ownership.py    who owns the output prefix: a run writes only where it finds nothing or its own artifacts
"""
