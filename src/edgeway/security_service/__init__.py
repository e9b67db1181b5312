"""The security service: OAuth 2.0 tokens, JWKS, revocations, policies and the admin API."""

from edgeway.security_service.app import create_security_app
from edgeway.security_service.settings import SecuritySettings

__all__ = ["SecuritySettings", "create_security_app"]
