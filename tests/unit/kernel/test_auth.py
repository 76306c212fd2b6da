"""The one admin check: token sources, constant-time comparison, disabled and empty tokens."""

from __future__ import annotations

import pytest

from rayfront.auth import AdminAuth, presented_token
from rayfront.errors import PermissionDeniedError


def test_presented_token_reads_bearer_or_custom_header_when_present():
    assert presented_token({"Authorization": "Bearer abc"}) == "abc"
    assert presented_token({"x-rayfront-admin-token": "xyz"}) == "xyz"
    assert presented_token([("authorization", "bearer  spaced ")]) == "spaced"
    assert presented_token({"Authorization": "Basic abc"}) is None
    assert presented_token({}) is None


def test_admin_check_passes_when_token_matches():
    AdminAuth("secret").check("secret", "POST /x")
    AdminAuth("secret").check_headers({"authorization": "Bearer secret"}, "RepositoryModelLoad")


@pytest.mark.parametrize("presented", [None, "", "secre", "secret2", "SECRET"])
def test_admin_check_refuses_when_token_missing_or_wrong(presented):
    with pytest.raises(PermissionDeniedError, match=r"^POST /x is an admin call and needs a valid"):
        AdminAuth("secret").check(presented, "POST /x")


def test_admin_check_refuses_everything_when_admin_disabled():
    auth = AdminAuth(None)
    assert not auth.enabled
    with pytest.raises(PermissionDeniedError, match="admin API is disabled"):
        auth.check("anything", "RepositoryModelUnload")


@pytest.mark.parametrize("token", ["", "   "])
def test_admin_auth_refuses_to_start_when_token_is_empty(token):
    with pytest.raises(ValueError, match="the admin token is empty"):
        AdminAuth(token)
