"""Cilium's Hubble gRPC API (a subset of the `flow`, `observer` and `relay` packages).

The `.proto` files are Cilium's own definitions (cilium/cilium `api/v1/`), cut to what this project
reads; the `*_pb2*.py` modules are generated from them and committed. See README.md; regenerate with
`python -m collectors.hubble_api.regenerate`.
"""
