"""gRPC through the gateway: the status a gRPC client gets for what the gateway itself refuses,
``grpc-timeout`` as the call's deadline, and the proxy action of a service reached over HTTP/2."""
