"""The pod's secrets stay out of what the trainer writes.

  scrubbing.py    every value of the pod's Secrets (and known token patterns) masked in stdout, stderr and logs
  secret_scan.py  every file bound for the output searched for them first (a match fails the run: SecretInOutput)
"""
