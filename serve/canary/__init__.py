"""Canary rollouts: weighted and sticky version routing, shadow traffic, progressive delivery.

Ray-free and transport-agnostic: the ingress owns one
:class:`~rayfront.canary.controller.CanaryManager`, asks it for a router per request, feeds
it request outcomes and mirrored answers (:mod:`rayfront.canary.shadow`), and serves
:func:`rayfront.canary.api.canary_routes` on its HTTP app; ``rayfront canary``
(:mod:`rayfront.canary.canary_cli`) drives those routes.
"""
