"""The exception tree's status codes: each class travels as the gRPC status it is named after, and back."""
from __future__ import annotations

import grpc
import pytest

from fleetmeter import errors
from fleetmeter._rpc import status_code_for
from fleetmeter.errors import FleetmeterError, ModelNotFound, NotFound, error_class_for

STATUS_ERRORS = [errors.InvalidArgument, errors.NotFound, errors.FailedPrecondition, errors.ResourceExhausted,
                 errors.Unavailable, errors.Aborted, errors.Unauthenticated, errors.PermissionDenied]
EXPECTED = {"InvalidArgument": "INVALID_ARGUMENT", "NotFound": "NOT_FOUND",
            "FailedPrecondition": "FAILED_PRECONDITION", "ResourceExhausted": "RESOURCE_EXHAUSTED",
            "Unavailable": "UNAVAILABLE", "Aborted": "ABORTED", "Unauthenticated": "UNAUTHENTICATED",
            "PermissionDenied": "PERMISSION_DENIED"}


@pytest.mark.parametrize("cls", STATUS_ERRORS, ids=lambda c: c.__name__)
def test_each_error_travels_as_its_status_and_comes_back_as_itself(cls):
    # A wrong code_name would send the error as another status (or raise KeyError in grpc.StatusCode[...]).
    assert cls.code_name == EXPECTED[cls.__name__]
    assert status_code_for(cls("boom")) is grpc.StatusCode[EXPECTED[cls.__name__]]
    assert error_class_for(cls.code_name) is cls


def test_model_not_found_is_a_not_found_told_apart_by_metadata():
    assert ModelNotFound.code_name == "NOT_FOUND" and issubclass(ModelNotFound, NotFound)
    assert error_class_for("NOT_FOUND", model_not_found=True) is ModelNotFound
    assert error_class_for("NOT_FOUND") is NotFound


def test_names_outside_the_tree_are_the_base_class():
    assert FleetmeterError.code_name == "UNKNOWN"
    assert error_class_for("INTERNAL") is FleetmeterError
    assert status_code_for(RuntimeError("x")) is grpc.StatusCode.INTERNAL
    assert str(NotFound("no such sweep")) == "no such sweep", "NotFound must not quote its message like KeyError"
