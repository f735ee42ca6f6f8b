"""The notifier: signals from ``session.signals`` to each tenant's webhooks (issue 8).

``core`` is pure (payloads, signatures, back-off); ``store`` keeps the webhooks and the
delivery log in PostgreSQL; ``service`` consumes Kafka and delivers over HTTP; ``app`` serves
``/healthz``, ``/readyz`` and ``/metrics``.
"""
