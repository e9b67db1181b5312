"""Aggregate endpoints: several service calls composed into one JSON response.

The route's ``aggregate`` config is compiled once (:mod:`.plan`); each request runs the plan
(:mod:`.executor`), merges the call outputs in the order the calls are declared (:mod:`.merge`)
and answers 200 with the merged object. A failed optional call leaves
``_meta: {completed: false, errors: {<call>: {status, reason}}}`` in the body and
``X-Edgeway-Completed: false`` on the response; a failed required call fails the endpoint with a
problem+json: the service's own 4xx (and its JSON members), 502 for its 5xx or an unusable
answer, 504 for a timeout or the deadline, 503 when no instance is available or the service's
guard refused the call (with ``Retry-After``).
"""
