"""A method's ``google.api.http`` rule (and its ``additional_bindings``) as :class:`Binding`\\ s,
checked against the method's messages: every path variable and the ``body`` name a field of the
request, ``response_body`` one of the response."""

from __future__ import annotations

from google.api import http_pb2

from edgeway.gateway.actions.transcode.descriptors import MethodInfo
from edgeway.gateway.actions.transcode.http_rule import Binding, TemplateError, parse_template
from edgeway.gateway.actions.transcode.messages import check_field_path

__all__ = ["bindings_of"]


def _binding(info: MethodInfo, rule: http_pb2.HttpRule) -> Binding:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise TemplateError("the google.api.http rule has no pattern (get, post, ...)")
    if kind == "custom":
        verb, text = rule.custom.kind.upper(), rule.custom.path
    else:
        verb, text = kind.upper(), getattr(rule, kind)
    template = parse_template(text)
    request = info.input_descriptor
    for path in template.variables:
        problem = check_field_path(request, path)
        if problem is not None:
            raise TemplateError(f"{verb} {text}: {problem}")
    body = rule.body or None
    if body is not None and body != "*" and body not in request.fields_by_name:
        raise TemplateError(f"{verb} {text}: body '{body}' is not a field of {request.full_name}")
    response_body = rule.response_body or None
    response = info.output_descriptor
    if response_body is not None and response_body not in response.fields_by_name:
        raise TemplateError(
            f"{verb} {text}: response_body '{response_body}' is not a field of {response.full_name}"
        )
    return Binding(verb, template, body, response_body)


def bindings_of(info: MethodInfo) -> list[Binding]:
    """The method's bindings, its main rule first; :class:`TemplateError` says what is wrong."""
    rule = info.rule
    if rule is None:
        return []
    out = [_binding(info, rule)]
    for extra in rule.additional_bindings:
        if extra.additional_bindings:
            raise TemplateError("additional_bindings may not nest")
        out.append(_binding(info, extra))
    return out
