"""Config of the client certificate filter: ``client_cert`` on a route (mutual TLS; the listener
asks for certificates with ``listen.tls.client_certificates``)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edgeway.gateway.config.base import StrictModel

_SEPARATOR = re.compile(r"(?<!\\)\s*([,+])\s*")


class ClientCertRule(StrictModel):
    """Which client certificates may call this route."""

    required: bool = Field(
        True,
        description="Refuse a request without a verified client certificate (403); matters on a "
        "listener whose `client_certificates.mode` is `optional`.",
    )
    subjects: list[str] | None = Field(
        None,
        min_length=1,
        description="Accepted certificate subjects, RFC 4514 as `X-Edgeway-Client-Cert-Subject` shows "
        "them (`CN=partner-a,O=Acme`); a request needs one of them, or one of `names`.",
    )
    names: list[str] | None = Field(
        None,
        min_length=1,
        description="Accepted subjectAltName values: a DNS name, URI (`spiffe://acme/partner-a`) or "
        "email address the certificate holds.",
    )

    @field_validator("subjects")
    @classmethod
    def _rfc4514(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        from cryptography import x509  # what the headers are written with: the same spelling

        out: list[str] = []
        for subject in value:
            # Spaces around the separators are common in what people copy (RFC 2253 readers
            # allow them); RFC 4514 itself has none.
            compact = _SEPARATOR.sub(lambda m: m.group(1), subject.strip())
            try:
                out.append(x509.Name.from_rfc4514_string(compact).rfc4514_string())
            except ValueError:
                raise PydanticCustomError(
                    "subject",
                    "'{subject}' is not an RFC 4514 name like CN=partner-a,O=Acme",
                    {"subject": subject},
                ) from None
        return out

    @model_validator(mode="after")
    def _conditions_need_a_certificate(self) -> ClientCertRule:
        if not self.required and (self.subjects is not None or self.names is not None):
            raise PydanticCustomError(
                "client_cert", "subjects and names need 'required: true' (they are checked on a certificate)"
            )
        return self
