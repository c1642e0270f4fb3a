"""Kubernetes tests: the stand-in API server (standin.py) and the real-cluster test (marker k8s)."""
