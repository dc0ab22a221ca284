"""Cilium's Hubble gRPC API (a subset of the `flow`, `observer` and `relay` packages).

The `.proto` files are Cilium's own definitions (cilium/cilium `api/v1/`), cut to what this project
reads, plus `received/received.proto`, the Relay client's view of a GetFlows response (endpoints
left encoded); the `*_pb2*.py` modules are generated from them and committed. See README.md;
regenerate with `python -m collectors.hubble_api.regenerate`.
"""
