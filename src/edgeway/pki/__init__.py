"""X.509 certificates, on the ``cryptography`` package: checking a certificate and its key before
anything serves them (:mod:`.certificates`), and a local certificate authority for development
(:mod:`.local_ca`, the ``edgeway tls`` command). Imports nothing else of edgeway, so the gateway,
the service kit and the demo can all use it."""
