"""JSON-to-gRPC transcoding: a client's JSON request becomes a gRPC call, its answer JSON.

Envoy's ``grpc_json_transcoder`` is the model. Methods come from a descriptor set (a
``FileDescriptorSet`` written by ``protoc --include_imports --descriptor_set_out``), matched to
requests by their ``google.api.http`` annotations (:mod:`.http_rule`) or named directly by a
route. The pieces, one job each:

- :mod:`.descriptors`: a descriptor set loaded into its own pool; methods and message classes;
- :mod:`.http_rule`: path templates (``/v1/{name=shelves/*}/books/{book.id}``) and bindings;
- :mod:`.messages`: path variables, query parameters and the JSON body into a request message,
  a response message into JSON (proto3 JSON mapping, :mod:`google.protobuf.json_format`);
- :mod:`.invoker`: the unary call on grpcio's asyncio channels, one per instance, the instance
  picked by the service's balancer and guard, with the deadline and metadata;
- :mod:`.streaming`: a streaming call on the same channels, its response messages as they come;
- :mod:`.relay`: a streaming method's request messages from a JSON array, its answer streamed,
  framed by :mod:`.framing` (a JSON array, NDJSON or Server-Sent Events);
- :mod:`.status`: a gRPC status as the gateway's problem answer;
- :mod:`.config`: the route's ``transcode`` block; :mod:`.action`: the route action.

grpcio and protobuf are imported only by a gateway with a transcoding route or call.
"""
