"""API permissions: anonymous reads of public data (configurable), writes need a login."""

from django.conf import settings
from rest_framework.permissions import SAFE_METHODS, BasePermission


class ReadPublicWriteAuthenticated(BasePermission):
    message = "Authentication credentials were not provided or are invalid."

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return settings.API_ANONYMOUS_READ or bool(request.user and request.user.is_authenticated)
        return bool(request.user and request.user.is_authenticated)


class IsStaffWithPermission(BasePermission):
    """Staff users holding the view's ``required_permission`` (e.g. materials.promote_modelversion)."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        needed = getattr(view, "required_permission", None)
        return bool(user and user.is_authenticated and user.is_staff and (needed is None or user.has_perm(needed)))
