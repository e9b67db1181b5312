"""The gateway's own telemetry: request, upstream and connection metrics in Prometheus
exposition (:mod:`.metrics`, counted by :mod:`.meters` on the hot path), OpenTelemetry spans
(:mod:`.tracing`, only imported when tracing is on), and the sum of every worker's metrics for a
multi-worker gateway (:mod:`.workers`)."""
