"""The dmdesk contract: what every service imports.

Event schemas (:mod:`shared.events`), subjects, stream and consumer definitions
(:mod:`shared.streams`), settings (:mod:`shared.settings`), database models
(:mod:`shared.models`) and the plumbing every service shares.
"""
