"""The services behind the gateway: clusters and their instances, discovery, resilience per
service, the calls the gateway makes and what it tells services about the client."""
