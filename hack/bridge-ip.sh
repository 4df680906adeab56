#!/usr/bin/env bash
# The Docker bridge's address (docker0): the host as pods and kind nodes reach it. Host servers for the cluster
# (S3, the registry's read-only instance, Kueue's webhooks) bind there. Prints nothing without Docker's bridge.
ip -4 -o addr show dev docker0 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n1
