"""Approval requests: the hub that holds and wakes sessions, the store, short-lived
credentials and webhooks."""
