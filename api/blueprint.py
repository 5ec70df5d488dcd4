"""The REST API's blueprints: flask-smorest's, reading JSON bodies strictly. A body that
is not JSON is a 415; one that is no JSON text the service can take is a 400 that says
why, never a 500: bytes that are
not UTF-8, a syntax error, nesting deeper than the parser's recursion allows, an integer
literal too long for Python to convert, or a string with a lone UTF-16 surrogate
(``"\\ud800"`` is valid JSON, but no Unicode text: it could be neither stored nor encoded)."""

from __future__ import annotations

import json

import flask_smorest
from webargs import core
from webargs.flaskparser import FlaskParser, abort, is_json_request
from werkzeug.exceptions import UnsupportedMediaType


def _invalid(reason: str):
    abort(400, messages={"json": [f"the body is not valid JSON: {reason}"]})


class StrictJSONParser(FlaskParser):
    def _handle_invalid_json_error(self, error, req, *args, **kwargs):
        if isinstance(error, json.JSONDecodeError) and error.msg.startswith("Bytes decoding error"):
            abort(400, messages={"json": [f"the body is not UTF-8 (byte {error.pos} cannot be decoded)"]})
        _invalid(str(error))

    def load_json(self, req, schema):
        if not is_json_request(req) and req.get_data(cache=True):
            raise UnsupportedMediaType(f"the body must be application/json (it is {req.mimetype or 'of no type'})")
        try:
            data = super().load_json(req, schema)
        except RecursionError:
            _invalid("it is nested too deeply")
        except ValueError:  # not a JSONDecodeError (answered above): an integer of too many digits
            _invalid("a number in it has too many digits")
        if data is not core.missing:
            try:
                json.dumps(data, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                _invalid("a string in it has a lone UTF-16 surrogate (such as \\ud800), which is no Unicode text")
            except RecursionError:
                _invalid("it is nested too deeply")
        return data


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = StrictJSONParser()
