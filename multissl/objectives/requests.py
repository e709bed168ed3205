"""The ``augmented`` view request that joint-embedding methods send, written once."""

from __future__ import annotations

from typing import Any

from multissl.views import ViewRequest

__all__ = ["augmented_request"]


def augmented_request(policy: str | None, num_views: int = 2, local_views: int = 0) -> ViewRequest:
    """``num_views`` augmented views (+ ``local_views`` multi-crop locals).

    ``policy`` None leaves the choice to the domain (its default: text has no "simclr" or "byol"
    policy, so a method must not impose one); ``local_views`` is sent only when multi-crop is asked
    for, since only the image domain offers it.
    """
    options: dict[str, Any] = {"num_views": num_views}
    if policy is not None:
        options["policy"] = policy
    if local_views:
        options["local_views"] = local_views
    return ViewRequest("augmented", options)
