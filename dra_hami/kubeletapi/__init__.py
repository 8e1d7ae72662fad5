"""The kubelet's plugin gRPC API: DRA v1 and v1beta1, device health v1alpha1 and plugin registration.

The .proto files are vendored unchanged from the upstream Go module k8s.io/kubelet at the tag recorded in
UPSTREAM (refresh.sh fetches them); the ``*_pb2`` / ``*_pb2_grpc`` modules are generated from them at build
time (codegen.py, run by ``python setup.py -q build_py``) and never committed. Its own package so that the
plugin and the health service both import it without importing each other.
"""
